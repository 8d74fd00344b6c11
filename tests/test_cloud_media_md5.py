"""The PMC cloud's metadata gives an md5 for every media file: an image whose body does not match it is
never kept (retried, then left for the next run), as the XML's md5 already was."""
from __future__ import annotations

import json

from data.scrape.config import ScrapeConfig
from data.scrape.job import run_scrape
from data.scrape.ratelimit import RateLimiter
from tests.cloud_server import FakeCloud, graphic_hrefs
from tests.pubmed_server import make_image


def test_an_image_that_does_not_match_its_md5_is_not_kept(fixtures_dir, tmp_path):
    xml = (fixtures_dir / "pmc_xml" / "PMC2900587.xml").read_bytes()  # 6 figures
    out = tmp_path / "out"
    with FakeCloud() as fake:
        pmcid = fake.add_cloud_article(xml, seed=4000)
        first = graphic_hrefs(xml)[0]
        path = f"/{pmcid}.1/{first}.jpg"
        good = fake.files[path]
        fake.files[path] = make_image(9999, (200, 170), "JPEG")  # a valid image, but not the one listed
        (tmp_path / "ids.txt").write_text(pmcid + "\n")
        config = ScrapeConfig(source="pmc-cloud", query="", pmcid_file=str(tmp_path / "ids.txt"), out=out, num=100,
                              cloud_url=fake.url, eutils_url=fake.url + "/entrez/eutils", email="m@example.org",
                              timeout=5.0, retries=1, backoff=0.01, backoff_max=0.05, progress=False)
        summary = run_scrape(config, limiter=RateLimiter(1000))
        kept = json.loads((out / "captions.json").read_text())
        assert len(kept) == 5 and not any(r["url"].endswith(path) for r in kept)
        assert summary.failed == {"image_unavailable_retry_later": 1}
        assert all("image_md5" not in r for r in kept)  # a download check, not a record field
        fake.files[path] = good  # the bucket serves the right file again: the next run keeps it
        summary = run_scrape(config, limiter=RateLimiter(1000))
    kept = json.loads((out / "captions.json").read_text())
    assert len(kept) == 6 and summary.kept_new == 1

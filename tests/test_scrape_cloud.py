"""The PMC Cloud Service source against a local server with the bucket's 2026 layout and the real
fixture articles: a normal run, a missing media file, 404s, 5xx and resume, unsafe metadata."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.scrape.cloud import media_file, parse_listing
from data.scrape.pmcid_list import read_pmcid_file
from data.scrape.config import ScrapeConfig
from data.scrape.job import run_scrape
from data.scrape.ratelimit import RateLimiter
from tests.cloud_server import FakeCloud, graphic_hrefs
from tests.pubmed_server import fixture_articles

FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "backoff_max": 0.05}
ALL_FIGURES = 29  # 9 + 6 + 11 + 3 figures in the four fixture articles
RETRACTED = (b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>'
             b'<article-id pub-id-type="pmc">424242</article-id></article-meta></front><body>'
             b'<fig id="F1"><caption><p>Withdrawn figure.</p></caption><graphic xlink:href="w-g001"/></fig>'
             b"</body></article>")


def serve(fake: FakeCloud, fixtures: Path) -> dict[str, str]:
    """The four real articles (one in two versions, one with a missing and an unlisted image), a
    retracted article; returns name -> PMCID."""
    names = {}
    for n, path in enumerate(fixture_articles(fixtures)):
        xml = path.read_bytes()
        hrefs = graphic_hrefs(xml)
        if path.name == "PMC5828200.nxml":
            fake.add_cloud_article(xml, seed=1000, version=1, is_manuscript=True)
            names[path.name] = fake.add_cloud_article(xml, seed=2000, version=2)
        elif path.name == "ehp-116-1694.nxml":
            names[path.name] = fake.add_cloud_article(xml, seed=3000, missing=(hrefs[0],), unlisted=(hrefs[1],),
                                                      license_code="CC0")
        elif path.name == "PMC2900587.xml":  # its JATS names no licence: the metadata's code is used
            names[path.name] = fake.add_cloud_article(xml, seed=4000, license_code="CC BY-NC")
        else:
            bad = ["https://elsewhere.example/steal.jpg", "s3://pmc-oa-opendata/PMC1.1/other-article.jpg",
                   "s3://pmc-oa-opendata/PMC2386533.1/../PMC1.1/x.jpg"]
            names[path.name] = fake.add_cloud_article(xml, seed=5000, media_urls_extra=bad)
            meta_path = f"/metadata/{names[path.name]}.1.json"
            meta = json.loads(fake.files[meta_path])
            meta["media_urls"] += meta.pop("media_urls_extra")
            fake.files[meta_path] = json.dumps(meta).encode()
    fake.add_cloud_article(RETRACTED, seed=6000, is_retracted=True)
    return names


def config(fake: FakeCloud, out: Path, **kw) -> ScrapeConfig:
    settings = {"source": "pmc-cloud", "query": "brain MRI", "out": out, "num": 100, "cloud_url": fake.url,
                "eutils_url": fake.url + "/entrez/eutils", "email": "maintainer@example.org", "batch_size": 2,
                **FAST, "progress": False, **kw}
    return ScrapeConfig(**settings)


def run(fake: FakeCloud, out: Path, **kw):
    return run_scrape(config(fake, out, **kw), limiter=RateLimiter(1000))


def captions(out: Path) -> list[dict]:
    return json.loads((out / "captions.json").read_text(encoding="utf-8"))


def id_file(tmp_path: Path, names: dict[str, str]) -> Path:
    path = tmp_path / "ids.txt"
    ids = [names[n] for n in sorted(names)]
    path.write_text("# articles to fetch\n" + "\n".join(ids + ["PMC999", ids[0].lower(), "PMC424242"]) + "\n")
    return path


def test_pmcid_lists_listings_and_media_names(tmp_path):
    (tmp_path / "a.csv").write_text("Article Citation,Accession ID,License\nx,PMC12,CC BY\ny,PMC7,CC0\n")
    assert read_pmcid_file(tmp_path / "a.csv") == ["PMC12", "PMC7"]
    (tmp_path / "b.txt").write_text("PMC3\nnot-an-id\n")
    with pytest.raises(ValueError, match=r"entry 2 \('not-an-id'\)"):
        read_pmcid_file(tmp_path / "b.txt")
    listing = (b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><CommonPrefixes><Prefix>PMC5.1/'
               b"</Prefix></CommonPrefixes><CommonPrefixes><Prefix>PMC5.3/</Prefix></CommonPrefixes><CommonPrefixes>"
               b"<Prefix>PMC55.1/</Prefix></CommonPrefixes></ListBucketResult>")
    assert parse_listing(listing, "PMC5") == [1, 3]
    media = {"f1.tif": "u/f1.tif", "f1.jpg": "u/f1.jpg", "f2.png": "u/f2.png", "f22.jpg": "u/f22.jpg"}
    assert (media_file(media, "f1"), media_file(media, "f2"), media_file(media, "f3")) == ("u/f1.jpg", "u/f2.png", "")


def test_cloud_run_from_a_pmcid_file(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    with FakeCloud() as fake:
        names = serve(fake, fixtures_dir)
        summary = run(fake, out, pmcid_file=str(id_file(tmp_path, names)), query="", shards=True, shard_size=10)
        paths = [s.path for s in fake.seen]
        agents = {s.user_agent for s in fake.seen}
    records = captions(out)
    assert summary.kept_total == len(records) == ALL_FIGURES - 2
    assert summary.failed == {"image_http_404": 1}  # listed in the metadata, not in the bucket
    assert summary.skipped == {"no_image": 1, "not_in_cloud": 1, "retracted": 1}
    assert {r["source"] for r in records} == {"pmc-cloud"} and all((out / r["image"]).is_file() for r in records)
    f2 = next(r for r in records if (r["pmcid"], r["figure_id"]) == ("PMC5828200", "F2"))
    assert f2["url"] == f"{fake.url}/PMC5828200.2/oncotarget-09-10681-g002.jpg"  # the newest non-manuscript version
    assert (f2["license"], f2["doi"], f2["label"]) == ("CC BY", "10.18632/oncotarget.24369", "Figure 2")
    assert {r["license"] for r in records if r["pmcid"] == names["PMC2900587.xml"]} == {"CC BY-NC"}
    assert not any("other-article" in p or "PMC1.1" in p for p in paths)  # metadata cannot send it elsewhere
    assert paths.count(f"/metadata/{names['PMC5828200.nxml']}.2.json") == 1  # the duplicate id was fetched once
    assert all(a.startswith("medvl_scrape/") for a in agents)
    assert not fake.requests_to("/entrez/")  # a PMCID file needs no search
    info = json.loads((out / "shards" / "shards.json").read_text())  # --shards: tar shards of captions.json
    assert (info["samples"], info["shards"]) == (ALL_FIGURES - 2, 3) and summary.shards == info["pattern"]


def test_cloud_run_from_an_eutils_search_with_the_licence_filter(fixtures_dir, tmp_path):
    with FakeCloud() as fake:
        serve(fake, fixtures_dir)
        summary = run(fake, tmp_path / "out", license="commercial", api_key="KEY1")
        searches = fake.requests_to("/entrez/eutils/esearch.fcgi")
    assert [s.params["retstart"] for s in searches] == ["0", "2", "4"]
    assert all(s.params["term"] == '(brain MRI) AND "open access"[filter]' and s.params["email"]
               == "maintainer@example.org" and s.params["tool"] == "medvl_scrape" and s.params["api_key"] == "KEY1"
               for s in searches)
    assert {r["license"] for r in captions(tmp_path / "out")} <= {"CC BY", "CC0", "public domain"}
    assert summary.skipped["license"] == 6  # the article whose metadata says CC BY-NC


def test_404_skips_the_article_and_5xx_stops_the_run_which_then_resumes(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    with FakeCloud() as fake:
        names = serve(fake, fixtures_dir)
        ids = id_file(tmp_path, names)
        order = [line for line in ids.read_text().splitlines()[1:]]
        fake.fault(f"/{order[0]}.1/{order[0]}.1.xml", "404")  # first article: gone for good
        fake.fault(f"/metadata/{order[3]}.1.json", "500", "500", "500")  # second batch: the server is down
        first = run(fake, out, pmcid_file=str(ids), query="")
        kept_first = len(captions(out))
        images_first = [s.path for s in fake.requests_to("/PMC") if s.path.endswith(".jpg")]
        assert "HTTP 500" in first.error and first.skipped["cloud_http_404"] == 1
        second = run(fake, out, pmcid_file=str(ids), query="")
        images_second = [s.path for s in fake.requests_to("/PMC") if s.path.endswith(".jpg")][len(images_first):]
    assert not second.error and second.kept_new == second.kept_total - kept_first > 0
    assert set(images_first).isdisjoint(images_second)  # nothing downloaded twice
    records = captions(out)
    assert len({(r["pmcid"], r["figure_id"]) for r in records}) == len(records)
    assert order[0] not in {r["pmcid"] for r in records}
    with FakeCloud() as fake, pytest.raises(ValueError, match="other settings|different collection"):
        serve(fake, fixtures_dir)
        run(fake, out, pmcid_file=str(ids), query="", min_size=10)


def test_cloud_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="needs --email"):
        ScrapeConfig(source="pmc-cloud", query="brain", email="").validate()
    ScrapeConfig(source="pmc-cloud", query="", pmcid_file="ids.txt").validate()  # no search, no contact needed
    with pytest.raises(ValueError, match="--query is empty"):
        ScrapeConfig(source="pmc", query="", email="a@b.org").validate()

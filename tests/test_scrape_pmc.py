"""The E-utilities source: esearch/efetch parsing on real replies and end-to-end runs on real JATS."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data.scrape.config import ScrapeConfig
from data.scrape.eutils import parse_esearch, pmc_image_url
from data.scrape.http import RejectedPayload
from data.scrape.job import run_scrape
from data.scrape.ratelimit import RateLimiter
from tests.pubmed_server import FakeNLM, fixture_articles, make_image

ROOT = Path(__file__).resolve().parents[1]
FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "backoff_max": 0.05}
ALL_FIGURES = 29  # 9 + 6 + 11 + 3 figures in the four fixture articles


def serve_fixture_articles(fake: FakeNLM, fixtures: Path) -> None:
    """The four real articles through efetch, and a distinct JPEG for every graphic they cite."""
    fake.use_envelope((fixtures / "eutils" / "efetch_pmc.xml").read_bytes())
    seed = 100
    for path in fixture_articles(fixtures):
        xml = path.read_bytes()
        hrefs = [h.decode() for h in re.findall(rb'<graphic[^>]*xlink:href="([^"]+)"', xml)]
        images = {}
        for href in hrefs:
            seed += 1
            images[href] = make_image(seed, (200, 170), "JPEG")
        fake.add_article(xml, images)


def config(fake: FakeNLM, out: Path, **kw) -> ScrapeConfig:
    settings = {"query": "brain MRI", "out": out, "num": 100, "source": "pmc", "eutils_url": fake.url + "/entrez/eutils",
                "pmc_url": fake.url, "email": "maintainer@example.org", "batch_size": 3, **FAST,
                "progress": False, **kw}
    return ScrapeConfig(**settings)


def run(fake: FakeNLM, out: Path, **kw):
    return run_scrape(config(fake, out, **kw), limiter=RateLimiter(1000))


def captions(out: Path) -> list[dict]:
    return json.loads((out / "captions.json").read_text(encoding="utf-8"))


def test_esearch_replies_from_ncbi(fixtures_dir):
    history = parse_esearch((fixtures_dir / "eutils" / "esearch2.xml").read_bytes())
    assert (history.count, len(history.ids), history.query_key) == (42249, 100, "1")
    assert history.webenv == "MCID_6927d6e7fee3e90f880ec190" and history.ids[0] == "41297076"
    plain = parse_esearch((fixtures_dir / "eutils" / "esearch5.xml").read_bytes())
    assert (plain.count, plain.ids, plain.webenv) == (5, ["6540636", "5830998", "4460425", "4466840", "3443459"], "")
    empty = parse_esearch((fixtures_dir / "eutils" / "esearch8.xml").read_bytes())
    assert (empty.count, empty.ids) == (0, [])


def test_esearch_errors():
    with pytest.raises(ValueError, match="malformed esearch XML"):
        parse_esearch(b"<eSearchResult><Count>3</Count>")
    with pytest.raises(RejectedPayload, match="Invalid query"):
        parse_esearch(b"<eSearchResult><ERROR>Invalid query</ERROR></eSearchResult>")
    with pytest.raises(ValueError, match="no numeric <Count>"):
        parse_esearch(b"<eSearchResult><Count>many</Count></eSearchResult>")


def test_image_urls_on_the_article_host():
    base = "https://pmc.ncbi.nlm.nih.gov/"
    assert pmc_image_url(base, "PMC5", "oncotarget-09-10681-g001") == \
        "https://pmc.ncbi.nlm.nih.gov/articles/PMC5/bin/oncotarget-09-10681-g001.jpg"
    assert pmc_image_url(base, "PMC5", "fig2.tif").endswith("/bin/fig2.jpg")
    assert pmc_image_url(base, "PMC5", "../../secret").endswith("/bin/..%2F..%2Fsecret.jpg")
    assert pmc_image_url(base, "PMC5", "ftp://host/x") == "" and pmc_image_url(base, "PMC5", " ") == ""


def test_pmc_run_keeps_every_figure_with_article_metadata(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        serve_fixture_articles(fake, fixtures_dir)
        summary = run(fake, out, api_key="KEY123")
        eutils = fake.requests_to("/entrez/eutils/")
        images = fake.requests_to("/articles/")
    records = captions(out)
    assert summary.kept_total == len(records) == ALL_FIGURES and not summary.skipped and not summary.failed
    assert len({(r["pmcid"], r["figure_id"]) for r in records}) == ALL_FIGURES
    f2 = next(r for r in records if (r["pmcid"], r["figure_id"]) == ("PMC5828200", "F2"))
    assert f2["caption"].startswith("Body weight of SD rats in the oral toxicity study of CSP Male (black)")
    assert (f2["label"], f2["license"], f2["doi"], f2["pmid"], f2["year"], f2["journal"], f2["source"]) == (
        "Figure 2", "CC BY", "10.18632/oncotarget.24369", "29535835", "2018", "Oncotarget", "pmc")
    assert f2["image"] == "images/PMC5828200_F2.jpg" and (out / f2["image"]).is_file()
    assert f2["url"] == fake.url + "/articles/PMC5828200/bin/oncotarget-09-10681-g002.jpg"
    ehp = [r for r in records if r["pmcid"] == "PMC2599765"]
    assert [r["figure_id"] for r in ehp] == ["f1-ehp-116-1694", "f2-ehp-116-1694", "f3-ehp-116-1694"]
    assert {r["license"] for r in ehp} == {"public domain"}
    # NCBI's rules: every E-utilities call names the tool and a contact, and carries the key.
    assert all(s.params.get("tool") == "medvl_scrape" and s.params.get("email") == "maintainer@example.org"
               and s.params.get("api_key") == "KEY123" for s in eutils)
    assert all("medvl_scrape/" in s.user_agent for s in eutils + images)
    search, *fetches = eutils
    assert search.path.endswith("/esearch.fcgi") and search.params["usehistory"] == "y"
    assert search.params["db"] == "pmc" and search.params["term"] == '(brain MRI) AND "open access"[filter]'
    assert [(f.params["retstart"], f.params["retmax"], f.params["query_key"]) for f in fetches] == [
        ("0", "3", "1"), ("3", "3", "1")]
    assert len(images) == ALL_FIGURES


def test_commercial_licence_filter(fixtures_dir, tmp_path):
    with FakeNLM() as fake:
        serve_fixture_articles(fake, fixtures_dir)
        summary = run(fake, tmp_path / "out", license="commercial")
        assert len(fake.requests_to("/articles/")) == 14  # filtered figures are never downloaded
    assert {r["pmcid"] for r in captions(tmp_path / "out")} == {"PMC5828200", "PMC2599765"}
    assert summary.kept_total == 14 and summary.skipped == {"license": 15}


def test_malformed_efetch_xml_stops_with_a_clear_error_then_resumes(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        serve_fixture_articles(fake, fixtures_dir)
        fake.fault("/entrez/eutils/efetch.fcgi", "", "garbage", "garbage", "garbage")  # 2nd batch stays broken
        summary = run(fake, out)
        assert "efetch batch at retstart=3: malformed XML" in summary.error
        assert "efetch.fcgi" in summary.error
        assert len(captions(out)) == 9 + 6 + 11  # the first batch was kept
        resumed = run(fake, out)
        fetches = fake.requests_to("/entrez/eutils/efetch.fcgi")
        assert fetches[-1].params["retstart"] == "3"  # the second run went straight to the failed batch
    assert resumed.kept_total == ALL_FIGURES and resumed.kept_new == 3 and not resumed.error


def test_unsafe_figure_ids_and_hrefs(tmp_path):
    article = (b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>'
               b'<article-id pub-id-type="pmc">77</article-id></article-meta></front><body>'
               b'<fig id="../../../../evil"><caption><p>Escaping id.</p></caption>'
               b'<graphic xlink:href="../../secret"/></fig></body></article>')
    with FakeNLM() as fake:
        fake.add_article(article)
        fake.files["/articles/PMC77/bin/..%2F..%2Fsecret.jpg"] = make_image(7, fmt="JPEG")
        summary = run(fake, tmp_path / "out", email="someone@example.org")
    assert summary.kept_total == 1
    [name] = [p.name for p in (tmp_path / "out" / "images").iterdir()]
    assert name.startswith("PMC77_evil-") and name.endswith(".jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_pmc_needs_a_contact_address(tmp_path):
    with FakeNLM() as fake, pytest.raises(ValueError, match="needs --email"):
        run(fake, tmp_path / "out", email="")


def test_resume_after_sigkill_downloads_nothing_twice(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        serve_fixture_articles(fake, fixtures_dir)
        cmd = [sys.executable, "scrape.py", "--source", "pmc", "--query", "brain MRI", "--num", "100",
               "--out", str(out), "--eutils-url", fake.url + "/entrez/eutils", "--pmc-url", fake.url,
               "--email", "maintainer@example.org", "--api-key", "KEY", "--batch-size", "3", "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

        def kill_on_tenth_image(seen) -> None:
            if seen.path.startswith("/articles/") and len(fake.requests_to("/articles/")) == 10:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

        fake.on_request = kill_on_tenth_image
        assert proc.wait(timeout=60) == -signal.SIGKILL
        fake.on_request = None
        first_run = [s.path for s in fake.requests_to("/articles/")]
        saved = {p.name for p in (out / "images").iterdir() if not p.name.startswith(".tmp-")}
        assert len(first_run) == 10 and len(saved) == 9  # the tenth was in flight
        summary = run(fake, out)
        second_run = [s.path for s in fake.requests_to("/articles/")][10:]
    records = captions(out)
    assert summary.kept_total == len(records) == ALL_FIGURES
    assert len({(r["pmcid"], r["figure_id"]) for r in records}) == ALL_FIGURES
    assert set(first_run[:9]).isdisjoint(second_run)  # finished downloads were not repeated
    assert len(second_run) == ALL_FIGURES - 9
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(files) == ALL_FIGURES and not any(n.startswith(".tmp-") for n in files)
    assert sorted(Path(r["image"]).name for r in records) == files

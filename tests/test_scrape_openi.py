"""End-to-end runs of the Open-i source against the local fake server."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

import scrape
from data.scrape.config import ScrapeConfig
from data.scrape.job import run_scrape
from data.scrape.openi import clean_caption
from data.scrape.ratelimit import RateLimiter
from tests.pubmed_server import FakeNLM, make_image, openi_hit, populate

FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "backoff_max": 0.05}
CLEAN_CAPTION = ("Follow-up brain MRI.(A) Axial DWI shows an oval focus in the splenium; H&E of a comparable "
                 "lesion (p < 0.05) is shown in (B).")


def config(fake: FakeNLM, out: Path, **kw) -> ScrapeConfig:
    settings = {"query": "brain MRI", "out": out, "num": 10, "openi_url": fake.url, "page_size": 3,
                **FAST, "progress": False, **kw}
    return ScrapeConfig(**settings)


def run(fake: FakeNLM, out: Path, **kw):
    return run_scrape(config(fake, out, **kw), limiter=RateLimiter(1000))


def captions(out: Path) -> list[dict]:
    return json.loads((out / "captions.json").read_text(encoding="utf-8"))


def test_normal_run_keeps_clean_pairs_and_counts_the_rest(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        populate(fake)
        summary = run(fake, out)
        searches = fake.requests_to("/api/search")
    records = captions(out)
    assert [(r["pmcid"], r["figure_id"]) for r in records] == [("PMC7000123", "F2"), ("PMC7000200", "F1"),
                                                               ("PMC7000600", "F1")]
    first = records[0]
    assert first["caption"] == CLEAN_CAPTION
    assert first["image"] == "images/PMC7000123_F2.png"
    assert first["url"] == fake.url + "/imgs/512/88/7000123/PMC7000123_jen-12-34-g002.png"
    assert (first["license"], first["source"], first["graphic"]) == ("CC BY", "openi", "jen-12-34-g002")
    assert (first["title"], first["year"], first["label"]) == ("Splenial lesion in patient 7000123: a case report", "2019", "")
    assert [r["license"] for r in records] == ["CC BY", "CC BY-NC", "CC BY-NC-ND"]
    for record in records:
        with Image.open(out / record["image"]) as img:
            img.load()
            assert img.size == (220, 180) == (record["width"], record["height"])
    assert summary.kept_total == summary.kept_new == 3
    assert dict(summary.skipped) == {"no_caption": 1, "not_pmc": 1, "too_small": 1, "no_image": 1,
                                     "duplicate_image": 1}
    assert not summary.failed and not summary.error
    # Paging: windows of three, 1-based and inclusive, until the hits ran out.
    assert [(s.params["m"], s.params["n"]) for s in searches] == [("1", "3"), ("4", "6"), ("7", "9")]
    assert all(s.params["query"] == "brain MRI" and s.params["coll"] == "pmc" for s in searches)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["PMC7000123_F2.png", "PMC7000200_F1.png",
                                                                  "PMC7000600_F1.png"]


def test_caption_cleaning_of_open_i_markup():
    assert clean_caption("Axial <b>MRI</b>.(A) <b>Brain</b>&amp;spine, T2\u2009&#8212;\u00a0FLAIR") == \
        "Axial MRI.(A) Brain&spine, T2 \u2014 FLAIR"


def test_caption_with_escaped_angle_brackets_keeps_its_text():
    assert clean_caption("lesions (p &lt; 0.05) larger than &gt;2 mm") == "lesions (p < 0.05) larger than >2 mm"


def test_article_type_and_image_type_are_sent_and_checked(tmp_path):
    with FakeNLM() as fake:
        populate(fake)
        run(fake, tmp_path / "o", num=1, article_types=("cr",), image_types=("m", "xg"))
        assert fake.requests_to("/api/search")[0].params["at"] == "cr"
        assert fake.requests_to("/api/search")[0].params["it"] == "m,xg"
        with pytest.raises(ValueError, match="unknown Open-i"):
            run(fake, tmp_path / "p", image_types=("xray",))


def test_num_reached_mid_page_then_extended(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        populate(fake)
        assert run(fake, out, num=1).kept_total == 1
        assert len(fake.requests_to("/api/search")) == 1 and len(fake.requests_to("/imgs/")) == 1
        assert len(captions(out)) == 1
        summary = run(fake, out, num=3)
        image_paths = [s.path for s in fake.requests_to("/imgs/")]
    assert summary.kept_total == 3 and summary.kept_new == 2
    assert len(image_paths) == len(set(image_paths))  # nothing downloaded twice
    assert len({(r["pmcid"], r["figure_id"]) for r in captions(out)}) == 3


def test_rerun_after_completion_downloads_nothing(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        populate(fake)
        run(fake, out)
        before = len(fake.requests_to("/imgs/"))
        summary = run(fake, out)
        assert len(fake.requests_to("/imgs/")) == before
    assert summary.kept_new == 0 and len(captions(out)) == 3


def test_image_saved_but_not_logged_is_reused(tmp_path):
    """A kill between moving the image into place and logging it: the file is used, not fetched again."""
    out = tmp_path / "out"
    with FakeNLM() as fake:
        populate(fake)
        run(fake, out, num=3)
        manifest = out / "manifest.jsonl"
        lines = manifest.read_text(encoding="utf-8").splitlines()
        last_kept = max(i for i, line in enumerate(lines) if '"event": "kept"' in line)
        kept_key = json.loads(lines[last_kept])["key"]
        # Drop the last "kept" line and everything after it, and leave debris a kill would leave.
        manifest.write_text("\n".join(lines[:last_kept]) + '\n{"event": "kep', encoding="utf-8")
        (out / "images" / ".tmp-abc123").write_bytes(b"half an image")
        requested = len(fake.requests_to("/imgs/"))
        summary = run(fake, out, num=3)
        assert len(fake.requests_to("/imgs/")) == requested
    assert summary.kept_total == 3 and summary.kept_new == 1
    assert [f"{r['pmcid']}/{r['figure_id']}" for r in captions(out)][-1] == kept_key
    assert not list((out / "images").glob(".tmp-*"))
    for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)


def test_image_404_and_corrupt_image_are_failed_and_not_retried(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        fake.add_openi_hit(openi_hit(7100001, "F1", "Missing file.", "m-g001"))  # no image served: 404
        fake.add_openi_hit(openi_hit(7100002, "F1", "Corrupt file.", "m-g002"), make_image(9)[:300])
        fake.add_openi_hit(openi_hit(7100003, "F1", "Not an image at all.", "m-g003"), b"GIF89a garbage")
        fake.add_openi_hit(openi_hit(7100004, "F1", "Good one.", "m-g004"), make_image(10))
        summary = run(fake, out)
        assert dict(summary.failed) == {"image_http_404": 1, "corrupt_image": 2}
        assert len(fake.requests_to("/imgs/512/88/7100001/")) == 1  # a 404 is final, not retried
        again = run(fake, out)
        assert len(fake.requests_to("/imgs/")) == 4
    assert summary.kept_total == 1 and again.kept_new == 0 and not again.failed


def test_transient_image_failures_are_retried_in_the_next_run(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        populate(fake)
        path = "/imgs/512/88/7000200/PMC7000200_a-g001.png"
        fake.fault(path, "500", "html", "html")  # a 5xx, then an HTML page: all three attempts fail
        first = run(fake, out)
        assert first.failed == {"image_unavailable_retry_later": 1}
        # With 7000200 deferred, 7000500's copy of the same bytes is the one kept.
        assert [r["pmcid"] for r in captions(out)] == ["PMC7000123", "PMC7000500", "PMC7000600"]
        second = run(fake, out)
        assert len(fake.requests_to(path)) == 4  # the pending figure was tried again, once
    assert second.kept_new == 0 and second.skipped == {"duplicate_image": 1}
    assert len(captions(out)) == 3


def test_search_errors_stop_cleanly_and_resume(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        populate(fake)
        fake.fault("/api/search", "429:1", "500")
        fake.faults["/api/search"].extend([""] * 1 + ["html"] * 3)  # page 1 fine, page 2 an HTML page each try
        summary = run(fake, out)
        assert "HTML page" in summary.error and "/api/search" in summary.error
        assert "m=4" in summary.error
        seen = fake.requests_to("/api/search")
        assert seen[1].time - seen[0].time >= 0.99  # Retry-After honoured
        assert len(captions(out)) == 2
        resumed = run(fake, out)
        assert fake.requests_to("/api/search")[len(seen)].params["m"] == "4"  # resumed at the failed page
    assert resumed.kept_total == 3 and not resumed.error


def test_unsafe_remote_names_stay_inside_out(tmp_path):
    out = tmp_path / "out"
    with FakeNLM() as fake:
        fake.add_openi_hit(openi_hit(7200001, "../../../../escape", "Traversal in the figure id.", "t-g001"),
                           make_image(11))
        bad_pmcid = openi_hit(7200002, "F1", "Traversal in the pmcid.", "t-g002")
        bad_pmcid["pmcid"] = "../../2"
        fake.add_openi_hit(bad_pmcid, make_image(12))
        fake.add_openi_hit(openi_hit(7200003, "F/1 \x00*?", "Odd characters.", "t-g003"), make_image(13))
        summary = run(fake, out)
    assert summary.skipped == {"bad_pmcid": 1}
    names = sorted(p.name for p in (out / "images").iterdir())
    assert len(names) == 2 and all(re.fullmatch(r"PMC\d+_[A-Za-z0-9._-]+\.png", n) for n in names)
    assert all(not n.split("_", 1)[1].startswith(".") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["captions.json", "images", "manifest.jsonl"]


def test_license_filter_and_min_size(tmp_path):
    with FakeNLM() as fake:
        populate(fake)
        summary = run(fake, tmp_path / "by", license="CC BY")
        # 7000200 (CC BY-NC) is filtered out, so 7000500's copy of its image is kept this time.
        assert [(r["pmcid"], r["license"]) for r in captions(tmp_path / "by")] == [
            ("PMC7000123", "CC BY"), ("PMC7000500", "CC BY")]
        assert summary.skipped["license"] == 2
        loose = run(fake, tmp_path / "small", min_size=50)
        assert "PMC7000300" in {r["pmcid"] for r in captions(tmp_path / "small")} and not loose.skipped["too_small"]


def test_cli_refuses_to_mix_collections(tmp_path, capsys):
    with FakeNLM() as fake:
        populate(fake)
        args = ["--query", "brain MRI", "--num", "1", "--out", str(tmp_path / "o"), "--openi-url", fake.url,
                "--no-progress", "--backoff", "0.01"]
        assert scrape.main(args) == 0
        assert "kept 1 pairs" in capsys.readouterr().out
        assert scrape.main(args[:1] + ["spine CT"] + args[2:]) == 2
    assert len(captions(tmp_path / "o")) == 1

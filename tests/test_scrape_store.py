"""Pieces of the output side: licence names, image checks, safe names and the manifest."""
from __future__ import annotations

import pytest

from data.scrape import licenses
from data.scrape.candidates import Candidate, normalize_pmcid
from data.scrape.image_check import ImageRejected, inspect_image
from data.scrape.safe_paths import path_inside, safe_component
from data.scrape.store import ScrapeStore
from tests.pubmed_server import make_image


def test_licence_names():
    assert licenses.from_url("http://creativecommons.org/licenses/by-nc-nd/4.0/") == "CC BY-NC-ND"
    assert licenses.from_url("https://creativecommons.org/publicdomain/zero/1.0/") == "CC0"
    assert licenses.from_url("http://example.org/licence") is None
    assert licenses.from_openi_code("byncsa") == "CC BY-NC-SA"
    assert licenses.parse_filter("cc-by, CC0") == {"CC BY", "CC0"}
    assert licenses.parse_filter("commercial") == {"CC0", "CC BY", "CC BY-SA", "CC BY-ND", "public domain"}
    assert licenses.parse_filter("") is None
    with pytest.raises(ValueError, match="unknown licence 'GPL'"):
        licenses.parse_filter("GPL")


def test_pmcid_normalisation():
    assert normalize_pmcid("4911020") == normalize_pmcid("pmc4911020") == "PMC4911020"
    for bad in ("", "PMC", "12a", "../1", "PMC-1"):
        with pytest.raises(ValueError):
            normalize_pmcid(bad)


@pytest.mark.parametrize("data, kwargs, reason", [
    (make_image(1)[:200], {}, "corrupt_image"),
    (b"%PDF-1.4 not an image", {}, "corrupt_image"),
    (make_image(2, fmt="PPM"), {}, "unsupported_format"),
    (make_image(3), {"max_pixels": 1000}, "too_many_pixels"),
    (make_image(4, (300, 120)), {"min_size": 160}, "too_small"),
])
def test_image_rejections(data, kwargs, reason):
    settings = {"min_size": 100, "max_pixels": 10**8, **kwargs}
    with pytest.raises(ImageRejected) as err:
        inspect_image(data, **settings)
    assert err.value.reason == reason


def test_image_accepted_with_its_format():
    info = inspect_image(make_image(5, (300, 200), "JPEG"), min_size=160, max_pixels=10**8)
    assert (info.extension, info.width, info.height) == (".jpg", 300, 200)


def test_safe_names(tmp_path):
    assert safe_component("F2") == "F2"
    assert safe_component("F 2") != safe_component("F_2")  # different ids never share a file
    for hostile in ("../../etc/passwd", "..", ".hidden", "a/b\\c", "\x00", ""):
        name = safe_component(hostile)
        assert name and "/" not in name and "\\" not in name and not name.startswith(".")
        assert path_inside(tmp_path, name + ".png").parent == tmp_path.resolve()
    with pytest.raises(ValueError, match="leaves"):
        path_inside(tmp_path, "../outside.png")


def test_manifest_corruption_is_reported_with_its_line(tmp_path):
    identity = {"source": "openi", "query": "q"}
    store = ScrapeStore(tmp_path, identity)
    cand = Candidate("openi", "PMC1", "F1", "", "cap", "http://h/x.png", "CC BY")
    store.skip(cand.key, "no_caption")
    text = (tmp_path / "manifest.jsonl").read_text(encoding="utf-8")
    (tmp_path / "manifest.jsonl").write_text(text.replace('"event": "skipped"', '"event": "skipped', 1))
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: corrupt manifest line"):
        ScrapeStore(tmp_path, identity)


def test_manifest_of_another_collection_or_cut_short(tmp_path):
    ScrapeStore(tmp_path, {"source": "openi", "query": "q"}).skip("openi/PMC1/F1", "no_caption")
    with pytest.raises(ValueError, match=r"belongs to a scrape with other settings \(query: 'q' there, 'r' now\)"):
        ScrapeStore(tmp_path, {"source": "openi", "query": "r"})
    with open(tmp_path / "manifest.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"event": "skipped", "ke')  # a kill during an append
    store = ScrapeStore(tmp_path, {"source": "openi", "query": "q"})
    assert store.is_done("openi/PMC1/F1")
    assert all(line.startswith("{") and line.endswith("}")
               for line in (tmp_path / "manifest.jsonl").read_text(encoding="utf-8").splitlines())


def test_every_config_field_is_one_command_line_option(tmp_path, monkeypatch):
    """The command line is built from ScrapeConfig: its defaults, and the flags as they always were."""
    import argparse
    from dataclasses import fields

    from data.scrape.config import ScrapeConfig, add_arguments, from_args

    monkeypatch.setenv("NCBI_EMAIL", "me@example.org")
    parser = add_arguments(argparse.ArgumentParser())
    config = from_args(parser.parse_args(["--query", "brain MRI"]))
    assert config == ScrapeConfig(query="brain MRI", email="me@example.org")
    assert str(config.out) == "datasets/pubmed"
    args = ["--query", "q", "--article-type", "cr, M", "--no-oa-filter", "--no-progress", "--max-image-mb", "2",
            "--backoff", "0.5", "--out", str(tmp_path)]
    config = from_args(parser.parse_args(args))
    assert (config.article_types, config.oa_filter, config.progress, config.max_image_bytes, config.backoff,
            config.out) == (("cr", "m"), False, False, 2_000_000, 0.5, tmp_path)
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == {f.name for f in fields(ScrapeConfig) if f.metadata.get("cli", True)}

"""Data-side faults: decompression bombs, bad-record counts and the pre-flight image check,
hostile records in split_figures.py, HTTP servers that trickle bytes or ask to wait for a day, and option
values that the libraries used to refuse in their own words."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import pretrain
import scrape
import split_figures
import train_retrieval
import vis
from configs.schema import COMMON
from data import check
from data.datasets import DatasetError, PairDataset, load_pairs
from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.images import check_header, load_rgb
from data.scrape.config import ScrapeConfig
from data.scrape.http import FetchError, PoliteClient
from data.scrape.ratelimit import RateLimiter
from models.checkpoint import cached_path, download_cached
from tests.pubmed_server import FakeNLM
from tiny import demo_set, tiny_config
from utils import save_config

PIL_LIMIT = Image.MAX_IMAGE_PIXELS  # as PIL set it: nothing of ours may change it


# -- helpers ----------------------------------------------------------------------------------------------


def write_bomb(path: Path, side: int = 15000) -> Path:
    """A valid ``side`` x ``side`` grayscale PNG of zeros (as ``Image.new("L", (15000, 15000))`` would make),
    ~1 MB on disk and 225 megapixels decoded; written chunk by chunk in a second instead of PIL's three."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate, rows = zlib.compressobj(1), bytes(side + 1) * 500
    body = b"".join(deflate.compress(rows) for _ in range(side // 500)) + deflate.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return write_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_set(tmp_path_factory.mktemp("data"), train=12, val=5, test=5)


def noise(path: Path, size: tuple[int, int] = (16, 16), fmt: str = "PNG", seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in half: its header is sound (the pre-flight passes it), its pixels do not decode."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])  # cut inside the entropy-coded data
    return path


def keep_caption(img, caption, rng):
    """A training transform for dataset tests (module level, so that loader workers can use it)."""
    return torch.zeros(1), caption


def write_config(tmp_path: Path, demo: Path, task: str, **overrides) -> Path:
    cfg = tiny_config(tmp_path, task, str(demo / "tokenizer"), **overrides)
    path = tmp_path / f"{task}.yaml"
    save_config(cfg, path)
    return path


class _Trickle(BaseHTTPRequestHandler):
    """``/body``: headers at once, then one byte every 50 ms; ``/headers``: the status line itself that
    slowly. Each read is far inside any read timeout; only a total deadline can stop it."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        try:
            if self.path.startswith("/headers"):
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(200):  # at most 10 s, whoever hangs up first
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def trickling_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def client(**settings) -> PoliteClient:
    return PoliteClient(RateLimiter(1000), ScrapeConfig(**{"timeout": 5.0, "retries": 0, "backoff": 0.01,
                                                           **settings}))


# -- 1. decompression bombs ----------------------------------------------------------------------------------


def test_a_decompression_bomb_is_a_bad_image_named_with_its_pixel_count(bomb, tmp_path):
    for load in (load_rgb, check_header):
        with pytest.raises(BadImageError, match=r"bomb\.png is too large: .*225000000 pixels.*max_image_pixels"):
            load(bomb)
    small = noise(tmp_path / "small.png", (100, 100))
    with pytest.raises(BadImageError, match=r"small\.png is too large: 100x100 = 10,000 pixels, more than "
                                            r"max_image_pixels 5,000"):
        load_rgb(small, max_pixels=5000)
    assert load_rgb(small, max_pixels=10_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == PIL_LIMIT  # the process-wide PIL setting is left alone
    key = COMMON["max_image_pixels"]
    assert key.default == key.hi == DEFAULT_MAX_PIXELS == 2 * PIL_LIMIT


def test_the_pixel_limit_reaches_loader_workers(tmp_path):
    good = noise(tmp_path / "good.png", (8, 8))
    big = noise(tmp_path / "big.png", (40, 40))
    (tmp_path / "set.json").write_text(json.dumps([{"image": "good.png", "caption": "fine"},
                                                   {"image": "big.png", "caption": "large"}]))
    pairs, problems = load_pairs([tmp_path / "set.json"], None, 30)
    assert not problems and {p.image for p in pairs} == {good, big}
    ds = PairDataset(pairs, keep_caption, seed=0, max_pixels=100)
    loader = DataLoader(ds, batch_size=None, num_workers=1)  # the limit must travel with the dataset
    samples = list(loader)
    assert [(s["caption"], s["bad"]) for s in samples] == [("fine", 0), ("fine", 1)]


def test_training_skips_a_decompression_bomb_before_step_one_and_resumes(tmp_path, demo, bomb):
    records = [{**r, "image": str(demo / r["image"])} for r in json.loads((demo / "pretrain.json").read_text())]
    data = tmp_path / "with_bomb.json"
    data.write_text(json.dumps(records + [{"image": str(bomb), "caption": "a huge scan"}]))
    cfg = write_config(tmp_path, demo, "pretrain", train_file=[str(data)], max_bad_fraction=0.2, max_epoch=1)
    out = tmp_path / "out"
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out)]) == 0
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out), "--resume", "auto",
                          "--options", "max_epoch=2"]) == 0
    lines = [json.loads(x) for x in (out / "log.txt").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1] and all(line["bad_records"] == 0 for line in lines)


def test_data_check_split_figures_and_vis_name_a_decompression_bomb(tmp_path, bomb, capsys):
    (tmp_path / "set.json").write_text(json.dumps([{"image": str(bomb), "caption": "huge"}]))
    assert check.main([str(tmp_path / "set.json")]) == 1
    captured = capsys.readouterr()
    assert "set.json[0]" in captured.out and "too large" in captured.out and "1 bad records" in captured.err
    (tmp_path / "captions.json").write_text(json.dumps([{"image": str(bomb.name), "caption": "(A) x. (B) y."}]))
    shutil.copy(bomb, tmp_path / bomb.name)  # a copy: a symbolic link out of the input folder is refused
    assert split_figures.main(["--in", str(tmp_path / "captions.json"), "--out", str(tmp_path / "sub"),
                               "--ocr", "none"]) == 0
    (failed,) = json.loads((tmp_path / "sub" / "failed.json").read_text())
    assert "too large" in failed["reason"] and "225000000 pixels" in failed["reason"]
    small = noise(tmp_path / "small.png", (64, 64))
    (tmp_path / "small.json").write_text(json.dumps([{"image": "small.png", "caption": "Axial MRI."}]))
    assert split_figures.main(["--in", str(tmp_path / "small.json"), "--out", str(tmp_path / "sub2"),
                               "--ocr", "none", "--max-image-pixels", "1000"]) == 0
    (failed,) = json.loads((tmp_path / "sub2" / "failed.json").read_text())
    assert "64x64 = 4,096 pixels, more than max_image_pixels 1,000" in failed["reason"]
    capsys.readouterr()
    rc = vis.main(["--checkpoint", str(tmp_path / "unused.pth"), "--image", str(bomb), "--caption", "a mass"])
    assert rc == 2 and "too large" in capsys.readouterr().err
    rc = vis.main(["--checkpoint", str(tmp_path / "unused.pth"), "--image", str(small), "--caption", "a mass",
                   "--max-image-pixels", "100"])
    assert rc == 2 and "64x64 = 4,096 pixels" in capsys.readouterr().err


# -- 6. bad-record counts and the pre-flight check -----------------------------------------------------------


def test_data_check_counts_records_not_files(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    noise(tmp_path / "ok.png")
    records = [{"image": "broken.png", "caption": f"record {i}"} for i in range(100)]
    (tmp_path / "set.json").write_text(json.dumps(records + [{"image": "ok.png", "caption": "good"}]))
    assert check.main([str(tmp_path / "set.json")]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 100 and all("broken.png" in line for line in lines)  # one line per record
    assert "101 records" in captured.err and "100 bad records" in captured.err


def test_training_counts_each_bad_record_once_per_draw(tmp_path):
    """Half the records decode badly; every replacement may be bad too. The count is of bad records
    drawn (one per draw), not of failed attempts."""
    records = []
    for i in range(20):
        name = f"{i}.jpg"
        truncated_jpeg(tmp_path / name) if i % 2 else noise(tmp_path / name, fmt="JPEG", seed=i)
        records.append({"image": name, "caption": f"caption {i}"})
    (tmp_path / "set.json").write_text(json.dumps(records))
    pairs, _ = load_pairs([tmp_path / "set.json"], None, 30)
    assert not check.check_images(pairs)  # their headers are fine: only decoding finds them
    ds = PairDataset(pairs, keep_caption, seed=3)
    assert sum(ds[i]["bad"] for i in range(len(ds))) == 10


def test_the_preflight_check_counts_records_and_stops_before_step_one(tmp_path, demo, bomb):
    records = [{**r, "image": str(demo / r["image"])} for r in json.loads((demo / "pretrain.json").read_text())]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    bad = [{"image": str(broken), "caption": f"broken {i}"} for i in range(3)] + [{"image": str(bomb), "caption": "x"}]
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps(records + bad))
    assert len(check.check_images(load_pairs([data], None, 30)[0])) == 4  # records, not files
    cfg = write_config(tmp_path, demo, "pretrain", train_file=[str(data)], max_bad_fraction=0.1)
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(DatasetError, match=rf"4 of {len(records) + 4} records are bad .* max_bad_fraction 10.0%.*broken\.png"):
        pretrain.main(["--config", str(cfg), "--output_dir", str(out)])
    assert time.monotonic() - t0 < 60 and not list(out.glob("checkpoint*"))  # nothing trained


def test_a_bad_val_or_test_image_stops_retrieval_before_training(tmp_path, demo):
    val = json.loads((demo / "val.json").read_text())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    val = [{**r, "image": str(demo / r["image"])} for r in val]
    val[2]["image"] = str(tmp_path / "broken.png")
    (tmp_path / "val.json").write_text(json.dumps(val))
    cfg = write_config(tmp_path, demo, "retrieval", train_file=[str(demo / "train.json")],
                       val_file=str(tmp_path / "val.json"), test_file=str(demo / "test.json"))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"val_file .*val\.json: 1 of 5 records have an unusable image .*"
                                           r"val\.json\[2\]: image file .*broken\.png"):
        train_retrieval.main(["--config", str(cfg), "--output_dir", str(out)])
    assert not list(out.glob("checkpoint*"))


# -- 8. split_figures.py ---------------------------------------------------------------------------------------


def two_panels(path: Path, seed: int) -> Path:
    """A figure of two noise panels on white, which the splitter cuts into two."""
    canvas = np.full((140, 300, 3), 255, np.uint8)
    rng = np.random.default_rng(seed)
    for x0 in (5, 165):
        canvas[10:130, x0:x0 + 130] = rng.integers(0, 200, (120, 130, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def test_split_figures_keeps_crops_apart_refuses_outside_paths_and_empty_captions(tmp_path):
    root = tmp_path / "in"
    two_panels(root / "a" / "fig.png", 1)
    two_panels(root / "b" / "fig.png", 2)
    two_panels(tmp_path / "outside.png", 3)
    caption = "(A) Axial view. (B) Coronal view."
    records = [{"image": "a/fig.png", "caption": caption, "pmcid": "PMC1"},
               {"image": "b/fig.png", "caption": caption, "pmcid": "PMC2"},
               {"image": "../outside.png", "caption": caption, "pmcid": "PMC3"},
               {"image": str(tmp_path / "outside.png"), "caption": caption, "pmcid": "PMC4"},
               {"image": "a/fig.png", "caption": "", "pmcid": "PMC5"},
               {"image": "b/fig.png", "caption": " ... ", "pmcid": "PMC6"}]
    (root / "captions.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    assert split_figures.main(["--in", str(root / "captions.json"), "--out", str(out), "--ocr", "none",
                               "--order-fallback", "--splits", "1,0,0"]) == 0
    rows = json.loads((out / "subfigures.json").read_text())
    assert sorted(r["pmcid"] for r in rows) == ["PMC1", "PMC1", "PMC2", "PMC2"]
    assert len({r["image"] for r in rows}) == 4  # a/fig.png and b/fig.png have crops of their own
    for r in rows:
        source = root / r["parent_image"]
        with Image.open(out / r["image"]) as crop, Image.open(source) as whole:
            assert np.array_equal(np.asarray(crop), np.asarray(whole.convert("RGB").crop(tuple(r["box"]))))
    failed = {f["record"]["pmcid"]: f["reason"] for f in json.loads((out / "failed.json").read_text())}
    assert set(failed) == {"PMC3", "PMC4", "PMC5", "PMC6"}
    assert "outside the input folder" in failed["PMC3"] and "outside the input folder" in failed["PMC4"]
    assert "empty caption" in failed["PMC5"] and "empty caption" in failed["PMC6"]
    train = json.loads((out / "train.json").read_text())
    assert len(train) == 4 and all(e["caption"].strip() for e in train)


def test_split_figures_refuses_a_negative_limit(tmp_path, capsys):
    (tmp_path / "captions.json").write_text("[]")
    with pytest.raises(SystemExit) as exit_:
        split_figures.main(["--in", str(tmp_path / "captions.json"), "--out", str(tmp_path / "o"), "--limit", "-5"])
    assert exit_.value.code == 2 and "--limit: must be 0 or more, got -5" in capsys.readouterr().err


# -- 9. hangs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/body", "/headers"])
def test_a_server_that_trickles_bytes_is_cut_off_at_the_deadline(path):
    with trickling_server() as url:
        t0 = time.monotonic()
        with pytest.raises(FetchError, match=r"no complete reply within the --deadline of 0\.5 s") as err:
            client(deadline=0.5, retries=1).fetch(url + path, lambda body: body)
        assert time.monotonic() - t0 < 4  # two tries of 0.5 s, while each byte came well inside --timeout 5
        assert err.value.transient and "gave up after 2 attempts" in str(err.value)


def test_a_huge_retry_after_fails_at_once_and_a_short_one_is_announced(caplog):
    with FakeNLM() as fake:
        fake.files["/x.bin"] = b"payload"
        fake.fault("/x.bin", "429:100000")
        t0 = time.monotonic()
        with pytest.raises(FetchError, match=r"HTTP 429: the server asks to wait 100000 s .*Retry-After.*more "
                                             r"than --max-retry-after 600 s") as err:
            client(retries=3).fetch(fake.url + "/x.bin", lambda body: body)
        assert time.monotonic() - t0 < 2 and err.value.transient and err.value.code == "retry_after_too_long"
        fake.fault("/x.bin", "429:1")
        with caplog.at_level(logging.WARNING, logger="data.scrape.retry"):
            assert client(retries=3).fetch(fake.url + "/x.bin", lambda body: body) == b"payload"
        assert "HTTP 429: waiting 1 s before the next try, as the server asks (Retry-After)" in caplog.text


@pytest.mark.parametrize("path", ["/body", "/headers"])
def test_a_checkpoint_download_that_trickles_stops_at_its_deadline(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDVL_DOWNLOAD_DEADLINE", "0.5")
    monkeypatch.setenv("MEDVL_DOWNLOAD_TIMEOUT", "5")
    with trickling_server() as url:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"could not download .*within the deadline of 0\.5 s"):
            download_cached(url + path + "/model_base.pth")
        assert time.monotonic() - t0 < 3
    assert not cached_path(url + path + "/model_base.pth").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no partial file left


# -- 12. option values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--retries", "-1", "--retries must be at least 0, got -1"),
    ("--timeout", "0", "--timeout must be a number of seconds > 0, got 0.0"),
    ("--backoff", "-5", "--backoff must be a number of seconds >= 0, got -5.0"),
    ("--deadline", "nan", "--deadline must be a number of seconds > 0, got nan"),
    ("--max-retry-after", "-1", "--max-retry-after must be a number of seconds >= 0, got -1.0"),
])
def test_scrape_options_are_checked_and_named(option, value, message, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="scrape"):
        assert scrape.main(["--query", "brain MRI", "--out", str(tmp_path / "o"), option, value]) == 2
    assert message in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "o").exists()  # refused before the output folder was opened


@pytest.mark.parametrize("blur", ["-1", "nan"])
def test_vis_refuses_a_negative_blur(blur, tmp_path, capsys):
    image = noise(tmp_path / "x.png")
    rc = vis.main(["--checkpoint", str(tmp_path / "unused.pth"), "--image", str(image), "--caption", "a mass",
                   "--blur", blur])
    assert rc == 2 and f"--blur {float(blur)}: the sigma must be a fraction of the image side >= 0" in \
        capsys.readouterr().err


# -- 7. (the lead's fix, shown here for docs/reliability.md): durable checkpoint writes ---------------------


def test_a_checkpoint_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    import os

    import engine

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    engine.save_atomic({"model": {"w": torch.ones(2)}}, tmp_path / "checkpoint_last.pth")
    kinds = [kind for kind, _ in events]
    renamed = next(path for kind, path in events if kind == "replace")
    assert kinds.index("fsync") < kinds.index("replace")
    assert any(kind == "fsync" and path in ("", renamed) for kind, path in events[:kinds.index("replace")])
    assert torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)["model"]["w"].sum() == 2

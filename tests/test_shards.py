"""WebDataset shards: written from JSON lists (atomic, resumable, reproducible), read for training with
the same samples as the JSON list, split over loader workers, resumed mid-epoch, and bad samples and
truncated tars handled like bad records."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

import pretrain
from data import shards
from data.datasets import PairDataset, load_pairs
from data.loader import train_loader
from data.shard_files import expand, is_shard_spec, shard_sizes
from data.shard_dataset import shard_train_loader
from tiny import demo_set, tiny_config
from transform import build_transform
from utils import save_config


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"))


def collate(samples: list[dict]) -> dict:
    return {"images": torch.stack([s["image"] for s in samples]), "captions": [s["caption"] for s in samples],
            "image_ids": [s["image_id"] for s in samples], "bad": sum(s["bad"] for s in samples)}


def seen(loader) -> list[tuple]:
    """(caption, image id, hash of the transformed image) of every sample, in loader order."""
    out = []
    for batch in loader:
        for img, cap, iid in zip(batch["images"], batch["captions"], batch["image_ids"]):
            out.append((cap, int(iid), hashlib.sha1(img.numpy().tobytes()).hexdigest()))
    return out


def config_for(tmp_path, demo, **overrides) -> dict:
    return tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), **overrides)


def shard_loader(config, pattern, workers=0, world=1, rank=0):
    config = {**config, "num_workers": workers}
    return shard_train_loader(config, [pattern], build_transform(config, train=True), collate, world, rank, 4)


def test_converter_writes_atomic_reproducible_resumable_shards(tmp_path, demo):
    out = tmp_path / "shards"
    info = shards.write_shards([demo / "pretrain.json"], out, shard_size=6)
    assert (info["samples"], info["shards"]) == (32, 6) and info["pattern"].endswith("shards-{000000..000005}.tar")
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {f"shards-{i:06d}.tar": 6 for i in range(5)} | {"shards-000005.tar": 2}
    with tarfile.open(out / "shards-000000.tar") as tar:
        names = tar.getnames()
        assert names[:3] == ["000000000.json", "000000000.png", "000000000.txt"]
        meta = json.loads(tar.extractfile("000000001.json").read())
        record = json.loads((demo / "pretrain.json").read_text())[1]
        assert tar.extractfile("000000001.txt").read().decode() == record["caption"]
        assert tar.extractfile("000000001.png").read() == (demo / record["image"]).read_bytes()
        assert meta["sample"] == 1 and meta["image"] == record["image"] and meta["where"].endswith("pretrain.json[1]")
        assert all(m.mtime == 0 for m in tar.getmembers())
    first = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    (out / "shards-000003.tar").unlink()  # as if killed before it was written: the rerun writes it alone
    sizes.pop("shards-000003.tar")
    (out / "sizes.json").write_text(json.dumps(sizes))
    (out / ".tmp-shards-000003.tar.x.tar").write_bytes(b"half a shard")
    shards.write_shards([demo / "pretrain.json"], out, shard_size=6)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == first and not list(out.glob(".tmp-*"))
    with pytest.raises(ValueError, match="other input or settings"):
        shards.write_shards([demo / "pretrain.json"], out, shard_size=5)
    info = shards.write_shards([demo / "pretrain.json"], out, shard_size=16, replace=True)  # derived shards
    assert info["shards"] == 2 and sorted(p.name for p in out.glob("*.tar")) == ["shards-000000.tar", "shards-000001.tar"]
    assert shards.main([str(demo / "pretrain.json"), "--out", str(tmp_path / "cli"), "--shard-size", "0"]) == 2


def test_specs_expand_braces_and_lists(tmp_path, demo):
    out = tmp_path / "s"
    shards.write_shards([demo / "pretrain.json"], out, shard_size=10)
    assert is_shard_spec(f"{out}/shards-{{000000..000003}}.tar") and is_shard_spec("pipe:cat a.tar")
    assert not is_shard_spec(str(demo / "pretrain.json"))
    urls = expand([f"{out}/shards-{{000000..000001}}.tar::{out}/shards-000003.tar", f"{out}/shards-000002.tar"])
    assert [Path(u).name for u in urls] == ["shards-000000.tar", "shards-000001.tar", "shards-000003.tar",
                                            "shards-000002.tar"]
    assert shard_sizes(urls) == [10, 10, 2, 10]
    assert shard_sizes([f"pipe:cat {out}/shards-000001.tar"]) == [10]  # no sizes.json: counted
    with pytest.raises(Exception, match="shards-000004.tar"):
        expand([f"{out}/shards-{{000003..000009}}.tar"])


def test_shards_give_the_json_lists_samples_over_workers_and_resume(tmp_path, demo):
    config = config_for(tmp_path, demo)
    out = tmp_path / "s"
    info = shards.write_shards([demo / "pretrain.json"], out, shard_size=4)  # 8 shards: 4 per reader of 2
    pairs, problems = load_pairs([demo / "pretrain.json"], None, config["max_words"])
    dataset = PairDataset(pairs, build_transform(config, train=True), seed=config["seed"])
    json_loader = train_loader(dataset, 4, collate, 1, 0, config["seed"], 0)
    json_loader.sampler.set_epoch(1)
    dataset.set_epoch(1)
    want = seen(json_loader)

    loader = shard_loader(config, info["pattern"])
    assert len(loader) == len(json_loader) == 8
    loader.dataset.set_epoch(1)
    got = seen(loader)
    assert Counter(got) == Counter(want)  # the same 32 samples, the same augmentation of each
    assert seen(loader) == got  # the order is a function of the seed and the epoch
    loader.dataset.set_epoch(2)
    assert [x[:2] for x in seen(loader)] != [x[:2] for x in got]  # another epoch, another order

    for workers in (0, 2):  # resumed at step 3: exactly the batches the uninterrupted epoch had left
        loader = shard_loader(config, info["pattern"], workers=workers)
        loader.dataset.set_epoch(1)
        full = seen(loader)
        assert Counter(x[:2] for x in full) == Counter(x[:2] for x in got)
        loader.sampler.set_epoch(1)
        loader.sampler.set_start(3 * 4)
        assert len(loader) == 5 and seen(loader) == full[12:]

    ranks = []
    for rank in (0, 1):
        loader = shard_loader(config, info["pattern"], world=2, rank=rank)
        loader.dataset.set_epoch(1)
        ranks.append(seen(loader))
    assert len(ranks[0]) == len(ranks[1]) == 16  # equal steps on every rank
    assert Counter(x[:2] for x in ranks[0] + ranks[1]) == Counter(x[:2] for x in got)

    unmixed = shard_loader({**config, "shard_shuffle_buffer": 1}, info["pattern"])  # the config key reaches readers
    unmixed.dataset.set_epoch(1)
    order = [x[:2] for x in seen(unmixed)]
    assert Counter(order) == Counter(x[:2] for x in got) and order != [x[:2] for x in got]
    keys = [iid for _, iid in order]
    shards_read = [keys[i:i + 4] for i in range(0, len(keys), 4)]  # shards of 4 samples: 2 images x 2 captions
    assert all(k == [k[0], k[0], k[0] + 1, k[0] + 1] and k[0] % 2 == 0 for k in shards_read)  # in written order


def _rewrite(shard: Path, change) -> None:
    """Rewrite a shard with ``change(name, data) -> data`` applied to every member."""
    members = []
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            members.append((m, change(m.name, tar.extractfile(m).read())))
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))


def test_corrupt_sample_and_truncated_tar_are_counted_bad_records(tmp_path, demo, caplog):
    config = config_for(tmp_path, demo, max_bad_fraction=0.5)
    out = tmp_path / "s"
    info = shards.write_shards([demo / "pretrain.json"], out, shard_size=8)
    _rewrite(out / "shards-000001.tar", lambda name, data: b"not a png" if name == "000000009.png" else data)
    third = out / "shards-000002.tar"
    third.write_bytes(third.read_bytes()[: third.stat().st_size // 2])  # cut in the middle of a sample
    loader = shard_loader(config, info["pattern"])  # the pre-flight counts the samples the cut shard lost
    assert "shards-000002.tar: cut short" in caplog.text and "3 sample(s) lost" in caplog.text
    batches = list(loader)  # the epoch covers the 29 samples that are there, no padding
    assert len(batches) == 7 and all(len(b["captions"]) == 4 for b in batches)
    assert sum(b["bad"] for b in batches) == 1  # the corrupt image, replaced and counted when it is read
    assert "000000009" in caplog.text
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[info["pattern"]],
                      max_bad_fraction=0.05)
    save_config(cfg, tmp_path / "strict.yaml")
    with pytest.raises(ValueError, match="max_bad_fraction"):  # above the limit the run stops before step one
        pretrain.main(["--config", str(tmp_path / "strict.yaml"), "--output_dir", str(tmp_path / "strict")])
    assert not list((tmp_path / "strict").glob("checkpoint_*.pth"))


def test_data_check_reads_shards_and_names_bad_samples(tmp_path, demo, capsys):
    from data import check

    out = tmp_path / "s"
    info = shards.write_shards([demo / "pretrain.json"], out, shard_size=8)
    assert check.main([info["pattern"]]) == 0
    assert f"{info['samples']} shard samples checked; 0 problems" in capsys.readouterr().err
    _rewrite(out / "shards-000001.tar", lambda name, data: b"not a png" if name == "000000009.png" else data)
    third = out / "shards-000002.tar"
    third.write_bytes(third.read_bytes()[: third.stat().st_size // 2])
    assert check.main([info["pattern"], str(demo / "pretrain.json")]) == 1
    printed = capsys.readouterr().out
    assert "shards-000001.tar#000000009: image cannot be decoded" in printed
    assert "shards-000002.tar: cut short (no end-of-archive block after its last member); 5 whole sample(s), 3 lost" \
        in printed


def test_pretrain_epoch_from_shards_sees_the_json_samples(tmp_path, demo, monkeypatch):
    from data.loader import Collator

    out = tmp_path / "s"
    info = shards.write_shards([demo / "pretrain.json"], out, shard_size=7)
    captions: dict[str, list] = {}
    original = Collator.__call__

    def spy(self, samples):
        captions.setdefault(current, []).extend(s["caption"] for s in samples)
        return original(self, samples)

    monkeypatch.setattr(Collator, "__call__", spy)
    for current, train_file in (("json", str(demo / "pretrain.json")), ("shards", info["pattern"])):
        cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[train_file])
        save_config(cfg, tmp_path / f"{current}.yaml")
        assert pretrain.main(["--config", str(tmp_path / f"{current}.yaml"), "--output_dir",
                              str(tmp_path / current)]) == 0
        line = json.loads((tmp_path / current / "log.txt").read_text().splitlines()[-1])
        assert line["bad_records"] == 0 and line["epoch"] == 0
    assert len(captions["shards"]) == 32 and Counter(captions["shards"]) == Counter(captions["json"])

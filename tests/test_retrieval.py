"""Retrieval: the fast evaluation equals BLIP's loop with 1, 2 and 3 processes; train_retrieval.py end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_retrieval
from utils import save_config
from models.config import ModelSetupError
from models.evaluation import FLOOR, itm_eval
from retrieval_worker import run as run_worker
from tiny import demo_set, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"), train=12, val=5, test=7)


def write_config(tmp_path, demo, **overrides) -> Path:
    files = dict(train_file=[str(demo / "train.json")], val_file=str(demo / "val.json"),
                 test_file=str(demo / "test.json"))
    cfg = tiny_config(tmp_path, "retrieval", str(demo / "tokenizer"), **{**files, **overrides})
    path = tmp_path / "tiny.yaml"
    save_config(cfg, path)
    return path


def check_same(result: dict, k: int) -> None:
    """Same candidates, same values (up to BLIP's world-size offset), same order, same metrics."""
    offset = FLOOR * (result["world"] - 1)
    ties = False  # two scored candidates of one query within float noise of each other
    for ref, fast in zip(result["ref"], result["fast"]):
        ref, fast = np.array(ref) - offset, np.array(fast)
        scored = fast > FLOOR
        assert np.array_equal(scored, ref > FLOOR + 1e-3)
        assert (scored.sum(axis=1) == min(k, ref.shape[1])).all()  # exactly the top k of each row
        assert np.allclose(ref[scored], fast[scored], atol=1e-4)
        for r, f in zip(ref, fast):
            # The same order, up to ties within float noise (BLIP's -100 * (world - 1) offset rounds).
            for a, b in ((r, f), (f, r)):
                order = np.argsort(-a, kind="stable")[:k]
                assert np.all(np.diff(b[order]) <= 1e-4)
            ties = ties or bool(np.any(np.diff(np.sort(r[r > FLOOR + 1e-3])) <= 1e-4))
    # A recall can differ only where such a tie decides a rank (an untrained model scores many alike).
    assert result["ref_metrics"] == result["fast_metrics"] or ties


def test_fast_path_equals_reference_in_one_process(tmp_path, demo):
    cfg = write_config(tmp_path, demo, k_test=4)
    result = run_worker(str(cfg), str(demo / "test.json"))
    check_same(result, 4)


@pytest.mark.parametrize("world", [2, 3])
def test_fast_path_equals_reference_across_processes(tmp_path, demo, world):
    cfg = write_config(tmp_path, demo, k_test=4)
    out = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                           str(ROOT / "tests" / "retrieval_worker.py"), str(cfg), str(demo / "test.json"), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == world
    check_same(result, 4)
    single = run_worker(str(cfg), str(demo / "test.json"))
    assert result["fast_metrics"] == single["fast_metrics"]  # the number of processes changes nothing


def test_itc_only_and_k_above_the_item_count(tmp_path, demo, caplog):
    cfg = write_config(tmp_path, demo, k_test=0)
    result = run_worker(str(cfg), str(demo / "test.json"))
    sims = np.array(result["sims"])
    assert np.allclose(np.array(result["fast"][0]), sims, atol=1e-6)
    cfg = write_config(tmp_path, demo, k_test=50)  # 7 images, 14 texts
    result = run_worker(str(cfg), str(demo / "test.json"))
    assert "k_test 50 exceeds the 14 texts" in caplog.text
    check_same(result, 50)
    assert (np.array(result["fast"][0]) > FLOOR).all()  # every pair re-ranked


def test_itm_eval_counts_an_image_right_when_any_caption_ranks_first():
    i2t = np.array([[0.1, 0.9, 0.0], [0.2, 0.1, 0.8]])
    t2i = np.array([[0.3, 0.1], [0.9, 0.2], [0.1, 0.7]])
    img2txt, txt2img = [[0, 1], [2]], [0, 0, 1]
    m = itm_eval(i2t, t2i, txt2img, img2txt)
    assert m["txt_r1"] == 100.0  # image 0's second caption ranks first
    assert m["img_r1"] == pytest.approx(100.0)
    t2i[0] = [0.1, 0.3]
    m = itm_eval(i2t, t2i, txt2img, img2txt)
    assert m["img_r1"] == pytest.approx(200 / 3) and m["img_r5"] == 100.0
    assert m["r_mean"] == pytest.approx((m["txt_r_mean"] + m["img_r_mean"]) / 2)


def test_train_and_evaluate_end_to_end(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=2, k_test=3)
    out = tmp_path / "ft"
    assert train_retrieval.main(["--config", str(cfg), "--output_dir", str(out)]) == 0
    lines = [json.loads(l) for l in (out / "log.txt").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1]
    for l in lines:
        assert 0 <= l["val_r_mean"] <= 100 and isinstance(l["test_txt_r1"], float) and "train_itc" in l
    assert lines[-1]["best"] == max(l["val_r_mean"] for l in lines)
    best = torch.load(out / "checkpoint_best.pth", weights_only=True)
    assert best["epoch"] == lines[-1]["best_epoch"] and "idx_queue" in best["model"]
    ev = tmp_path / "ev"
    assert train_retrieval.main(["--config", str(cfg), "--output_dir", str(ev), "--evaluate",
                                 "--options", f"pretrained={out / 'checkpoint_best.pth'}"]) == 0
    (line,) = [json.loads(l) for l in (ev / "evaluate.txt").read_text().splitlines()]
    assert line["val_r_mean"] == pytest.approx(lines[best["epoch"]]["val_r_mean"])
    assert json.loads((ev / "metrics.json").read_text())["test"]["r_mean"] == line["test_r_mean"]


def test_torchrun_two_processes_with_negatives_from_all_ranks(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=1, k_test=3, negative_all_rank=True, batch_size_train=3)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "train_retrieval.py", "--config", str(cfg), "--output_dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [json.loads(l) for l in (out / "log.txt").read_text().splitlines()]
    assert line["train_itm"] > 0 and 0 <= line["test_r_mean"] <= 100


def test_bad_inputs_get_clear_errors(tmp_path, demo):
    cfg = write_config(tmp_path, demo, val_file=str(tmp_path / "absent.json"))
    with pytest.raises(Exception, match="absent.json does not exist"):
        train_retrieval.main(["--config", str(cfg), "--output_dir", str(tmp_path / "a"), "--evaluate"])
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    cfg = write_config(tmp_path, demo, pretrained=str(tmp_path / "other.pth"))
    with pytest.raises(ModelSetupError, match="does not match this model's architecture"):
        train_retrieval.main(["--config", str(cfg), "--output_dir", str(tmp_path / "b"), "--evaluate"])
    cfg = write_config(tmp_path, demo, train_file=None, ann_root=None)
    with pytest.raises(Exception, match="no train_file in the config and no ann_root"):
        train_retrieval.main(["--config", str(cfg), "--output_dir", str(tmp_path / "c")])


def test_sequence_only_baseline_equals_brute_force_ranking():
    """bench/demo_baseline.py's exact expected recall equals the mean over every random order."""
    import itertools

    from bench.probes import sequence_only_recall

    records = [{"caption": ["a", "b"]}, {"caption": ["c"]}, {"caption": ["d", "e"]}, {"caption": ["f"]}]
    seqs = ["T1", "T1", "T1", "CT"]
    got = sequence_only_recall(records, seqs, ks=(1, 2))
    owner = [0, 0, 1, 2, 2, 3]  # caption -> image
    for k in (1, 2):
        hits_t2i, hits_i2t = [], []
        for t, img in enumerate(owner):  # text query: images of its sequence in every order
            same = [i for i in range(4) if seqs[i] == seqs[img]]
            orders = list(itertools.permutations(same))
            hits_t2i.append(sum(img in o[:k] for o in orders) / len(orders))
        for i in range(4):  # image query: captions of its sequence in every order
            same = [t for t, im in enumerate(owner) if seqs[im] == seqs[i]]
            orders = list(itertools.permutations(same))
            hits_i2t.append(sum(any(owner[t] == i for t in o[:k]) for o in orders) / len(orders))
        assert got[f"img_r{k}"] == pytest.approx(100 * np.mean(hits_t2i), abs=0.01)
        assert got[f"txt_r{k}"] == pytest.approx(100 * np.mean(hits_i2t), abs=0.01)

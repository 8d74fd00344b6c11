"""Zero-shot classification (models/zeroshot.py), its metrics (models/metrics.py) and `predict.py classify`."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import predict  # noqa: E402
from configs import read_yaml  # noqa: E402
from models import build_model, init_tokenizer  # noqa: E402
from models import metrics  # noqa: E402
from models.zeroshot import ZeroShotClassifier, class_features, expand_prompts  # noqa: E402
from tiny import minilm_folder, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"mass": ["axial flair mri shows a mass", "a large mass"], "cyst": ["a cyst"],
           "normal": ["no focal abnormality", "normal brain", "normal axial ct"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zeroshot")
    tokenizer = init_tokenizer(minilm_folder())
    config = tiny_config(folder, "pretrain", minilm_folder())
    torch.manual_seed(0)
    model = build_model(config, "pretrain", tokenizer).eval()
    ckpt = folder / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, ckpt)
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    records = []
    for i, label in enumerate(["mass", "cyst", "normal", "mass", "normal"]):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        records.append({"image": f"images/{i}.png", "label": label})
    (folder / "labelled.json").write_text(json.dumps(records))
    (folder / "classes.yaml").write_text(json.dumps({"classes": CLASSES}))  # JSON is YAML
    return {"folder": folder, "model": model, "ckpt": ckpt}


# -- class files -----------------------------------------------------------------------------------------


def test_templates_are_filled_with_names_and_variables():
    spec = {"variables": {"sequence": ["FLAIR", "CT"]},
            "templates": ["axial {sequence} showing {class}", "{class}"],
            "classes": {"glioma": ["a glioma", "a diffuse glioma"], "cyst": None,
                        "normal": {"prompts": ["normal {sequence}"]},
                        "infarct": {"names": "an infarct", "templates": ["{class} on DWI"], "prompts": ["stroke"]}}}
    out = expand_prompts(spec)
    assert out["glioma"] == ["axial FLAIR showing a glioma", "axial FLAIR showing a diffuse glioma",
                             "axial CT showing a glioma", "axial CT showing a diffuse glioma", "a glioma",
                             "a diffuse glioma"]
    assert out["cyst"] == ["axial FLAIR showing cyst", "axial CT showing cyst", "cyst"]  # the key is the name
    assert out["normal"] == ["normal FLAIR", "normal CT"]
    assert out["infarct"] == ["an infarct on DWI", "stroke"]
    assert expand_prompts({"classes": {"a": ["x", "y"], "b": "z"}}) == {"a": ["x", "y"], "b": ["z"]}


@pytest.mark.parametrize("spec, message", [
    ({"classes": {"a": "x"}, "templates": ["{organ} {class}"]}, "uses {organ}"),
    ({"classes": {"a": "x"}, "template": ["{class}"]}, "unknown key 'template'"),
    ({"classes": {"a": {"prompts": []}}}, "prompts must be a non-empty"),
    ({"classes": {}}, "'classes' mapping"),
    ({"classes": {"a": {"name": "x"}}, "templates": ["{class}"]}, "unknown key 'name'"),
])
def test_bad_class_files_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        expand_prompts(spec, "my.yaml")


def test_shipped_class_files_parse_and_match_the_demo_set():
    from data.synthetic.demo import KINDS, SEQUENCES

    brain = expand_prompts(read_yaml(ROOT / "configs/zeroshot/brain_findings.yaml"))
    assert list(brain) == ["glioma", "meningioma", "metastasis", "infarct", "haemorrhage", "normal"]
    assert "axial FLAIR MRI showing a glioma" in brain["glioma"]
    assert set(expand_prompts(read_yaml(ROOT / "configs/zeroshot/demo_findings.yaml"))) == {"normal", *KINDS}
    assert set(expand_prompts(read_yaml(ROOT / "configs/zeroshot/demo_sequence.yaml"))) == set(SEQUENCES)
    assert set(expand_prompts(read_yaml(ROOT / "configs/zeroshot/demo_side.yaml"))) == {"left", "right"}


# -- scores ----------------------------------------------------------------------------------------------


def test_class_feature_is_the_renormalised_mean_of_prompt_features():
    feats = F.normalize(torch.randn(5, 8), dim=-1)
    out = class_features(feats, torch.tensor([0, 0, 1, 1, 1]), 2)
    torch.testing.assert_close(out[0], F.normalize(feats[:2].mean(0), dim=0))
    torch.testing.assert_close(out[1], F.normalize(feats[2:].mean(0), dim=0))


def test_itc_probabilities_are_a_softmax_of_cosines_over_temperature(setup):
    model = setup["model"]
    clf = ZeroShotClassifier(model, CLASSES)
    images = torch.randn(3, 3, 32, 32)
    probs = clf.predict(images)
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    with torch.no_grad():
        image_feat = model.encode_image(images)[1]
        feats = []
        for name in CLASSES:
            batch = model.tokenize(CLASSES[name])
            f = model.encode_text(batch["input_ids"], batch["attention_mask"])[1]
            feats.append(F.normalize(f.mean(0), dim=0))
        expected = (image_feat @ torch.stack(feats).T / model.temp).softmax(-1)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)


def test_calibration_centres_each_class_over_the_reference_images(setup):
    clf = ZeroShotClassifier(setup["model"], CLASSES)
    images = torch.randn(6, 3, 32, 32)
    raw = clf.logits(images)
    offsets = clf.calibrate([images[:4], images[4:]])
    torch.testing.assert_close(offsets, (raw * clf.model.temp).mean(0), atol=1e-5, rtol=1e-4)
    calibrated = clf.logits(images)
    torch.testing.assert_close(calibrated.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(calibrated, raw - offsets / clf.model.temp, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least one image"):
        clf.calibrate([])


def test_itm_reranking_scores_the_top_k_classes_only(setup):
    model = copy.deepcopy(setup["model"])
    torch.manual_seed(3)
    with torch.no_grad():  # a larger ITM head, so that re-ranking has an effect to test
        model.itm_head.weight.normal_(0, 0.5)
    clf = ZeroShotClassifier(model, CLASSES, itm_top_k=2, itm_prompts=0)
    images = torch.randn(2, 3, 32, 32)
    scores = clf.logits(images)
    assert (torch.isinf(scores).sum(1) == 1).all()  # 3 classes, top 2 kept
    with torch.no_grad():
        image_embeds, image_feat = model.encode_image(images)
        cos = image_feat @ clf.class_feat.T
        for b in range(2):
            for c in cos[b].topk(2).indices.tolist():
                name = clf.names[c]
                batch = model.tokenize(CLASSES[name])
                n = len(CLASSES[name])
                match = model.itm_logits(image_embeds[b:b + 1].expand(n, -1, -1), batch["input_ids"],
                                         batch["attention_mask"])[:, 1].mean()
                torch.testing.assert_close(scores[b, c], match + cos[b, c], atol=1e-5, rtol=1e-4)
    assert (clf.predict(images)[torch.isinf(scores)] == 0).all()
    # with one prompt per class, the one nearest the image by ITC is re-scored
    one = ZeroShotClassifier(model, CLASSES, itm_top_k=3, itm_prompts=1)
    with torch.no_grad():
        scores = one.logits(images[:1])
        sims = image_feat[0] @ one.prompt_feat.T
        for c, name in enumerate(one.names):
            rows = (one.class_index == c).nonzero().squeeze(1)
            best = rows[sims[rows].argmax()]
            match = model.itm_logits(image_embeds[:1], one.input_ids[best:best + 1],
                                     one.attention_mask[best:best + 1])[0, 1]
            torch.testing.assert_close(scores[0, c], match + cos[0, c], atol=1e-5, rtol=1e-4)


# -- metrics ---------------------------------------------------------------------------------------------


def test_metrics_match_scikit_learn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(5):
        y = rng.integers(0, 4, 60)
        probs = rng.dirichlet(np.ones(4), 60)
        probs[:, 0] = np.round(probs[:, 0], 1)  # ties
        probs /= probs.sum(1, keepdims=True)
        report = metrics.classification_report(y, probs, ["a", "b", "c", "d"])
        pred = probs.argmax(1)
        assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
        assert report["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
        assert report["auroc_macro_ovr"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
        assert report["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(4)).tolist()


def test_auroc_hand_values_and_classes_without_positives():
    assert metrics.binary_auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    value, left_out = metrics.macro_auroc(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1, 0], [0.6, 0.4, 0],
                                                                           [0.2, 0.8, 0], [0.3, 0.7, 0]]))
    assert value == pytest.approx(1.0) and left_out == [2]


def test_baselines_of_chance_and_a_constant_predictor():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    base = metrics.baselines(y, 3)
    assert base["constant"]["class"] == 0
    assert base["constant"]["accuracy"] == pytest.approx(0.6)
    assert base["constant"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert base["constant"]["macro_f1"] == pytest.approx((2 * 0.6 / 1.6) / 3)
    assert base["chance"]["accuracy"] == pytest.approx(1 / 3) and base["chance"]["auroc_macro_ovr"] == 0.5
    # uniform guessing's expected F1 of class c: 2 s_c (1/C) / (s_c + 1/C)
    expected = np.mean([2 * s / 3 / (s + 1 / 3) for s in (0.6, 0.3, 0.1)])
    assert base["chance"]["macro_f1"] == pytest.approx(expected)


# -- predict.py classify ----------------------------------------------------------------------------------


def test_classify_command_writes_probabilities_metrics_and_confusion(setup, tmp_path, capsys):
    folder, out = setup["folder"], tmp_path / "zs"
    assert predict.main(["classify", "--checkpoint", str(setup["ckpt"]), "--classes", str(folder / "classes.yaml"),
                     "--images", str(folder / "labelled.json"), "--out", str(out), "--device", "cpu",
                     "--itm-top-k", "2", "--calibrate", "self"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(printed[-1])
    assert len(printed) == 6 and printed[0].endswith("label mass")
    assert summary["images"] == 5 and summary["n"] == 5 and 0 <= summary["accuracy"] <= 1
    assert summary["calibrate"] == "self"
    assert summary["baselines"]["constant"]["accuracy"] == pytest.approx(0.4)
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["label"] for r in rows] == ["mass", "cyst", "normal", "mass", "normal"]
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in rows)
    csv = (out / "predictions.csv").read_text().splitlines()
    assert csv[0] == "image,label,predicted,mass,cyst,normal" and len(csv) == 6
    report = json.loads((out / "metrics.json").read_text())
    assert np.asarray(report["confusion_matrix"]).sum() == 5
    assert Image.open(out / "confusion.png").format == "PNG"
    # a folder without labels: probabilities only
    assert predict.main(["classify", "--checkpoint", str(setup["ckpt"]), "--classes", str(folder / "classes.yaml"),
                     "--images", str(folder / "images"), "--out", str(tmp_path / "plain"),
                     "--calibrate", str(folder / "images")]) == 0
    assert "accuracy" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not (tmp_path / "plain" / "metrics.json").exists()


def test_classify_refuses_labels_that_are_not_classes(setup, tmp_path, capsys):
    folder = setup["folder"]
    (tmp_path / "bad.json").write_text(json.dumps([{"image": str(folder / "images" / "0.png"), "label": "glioma"}]))
    assert predict.main(["classify", "--checkpoint", str(setup["ckpt"]), "--classes", str(folder / "classes.yaml"),
                     "--images", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")]) == 2
    assert "['glioma'] are not classes" in capsys.readouterr().err


# -- bench/zeroshot_demo.py (run as a command: tests do not import bench) ---------------------------------

DEMO_TASKS = {"sequence": 4, "finding": 5, "side": 2}  # classes of each task's class file


def demo_labels(case: dict, task: str) -> str | None:
    """The task's label of a demo case, written again from the demo set's lesions.json so that the
    bench's own rule is checked, not reused: findings and sides only where all lesions agree."""
    if task == "sequence":
        return case["sequence"]
    values = {lesion["kind" if task == "finding" else "side"] for lesion in case["lesions"]}
    if task == "finding" and not values:
        return "normal"
    return values.pop() if len(values) == 1 else None


@pytest.fixture(scope="module")
def demo_bench(tmp_path_factory):
    import os
    import subprocess
    import sys

    from tiny import demo_set

    folder = tmp_path_factory.mktemp("zeroshot_demo")
    demo = demo_set(folder, train=4, val=6, test=12)
    config = tiny_config(folder, "pretrain", str(demo / "tokenizer"))
    torch.manual_seed(0)
    model = build_model(config, "pretrain", init_tokenizer(str(demo / "tokenizer")))
    ckpt = folder / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, ckpt)
    proc = subprocess.run([sys.executable, "-m", "bench.zeroshot_demo", "--checkpoint", str(ckpt), "--demo", str(demo),
                           "--lists", str(folder / "lists"), "--itm-prompts", "2"],
                          cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((demo / "lesions.json").read_text())
    labels = {task: [label for case in meta.values() if case["split"] == "test"
                     if (label := demo_labels(case, task)) is not None] for task in DEMO_TASKS}
    return {"out": json.loads(proc.stdout), "labels": labels, "lists": folder / "lists", "demo": demo}


def test_zeroshot_demo_reports_every_task_and_variant(demo_bench):
    out = demo_bench["out"]
    assert out["split"] == "test" and set(out) == {"checkpoint", "split", *DEMO_TASKS}
    variants = {"itc", "itc_calibrated_val", "itm_top2", "itm_top2_calibrated_val"}
    for task, n_classes in DEMO_TASKS.items():
        row, labels = out[task], demo_bench["labels"][task]
        assert set(row) == {"n", "baselines", "support", *variants}
        assert row["n"] == len(labels) > 0
        for name in variants:
            metrics_ = row[name]
            for key in ("accuracy", "balanced_accuracy", "macro_f1"):
                assert 0.0 <= metrics_[key] <= 1.0, (task, name, key)
            assert metrics_["auroc_macro_ovr"] is None or 0.0 <= metrics_["auroc_macro_ovr"] <= 1.0
            matrix = np.asarray(metrics_["confusion_matrix"])
            assert matrix.shape == (n_classes, n_classes) and matrix.sum() == len(labels)
            assert metrics_["accuracy"] == pytest.approx(np.trace(matrix) / len(labels))


def test_zeroshot_demo_baselines_are_what_the_labels_imply(demo_bench):
    from collections import Counter

    for task, n_classes in DEMO_TASKS.items():
        row, counts = demo_bench["out"][task], Counter(demo_bench["labels"][task])
        n, top = len(demo_bench["labels"][task]), max(counts.values())
        assert {k: v for k, v in row["support"].items() if v} == dict(counts)
        share = top / n
        constant = row["baselines"]["constant"]
        assert constant["accuracy"] == pytest.approx(share)
        assert constant["balanced_accuracy"] == pytest.approx(1 / len(counts))
        # the majority class's F1 is 2 s / (1 + s); every other present class scores 0
        assert constant["macro_f1"] == pytest.approx(2 * share / (1 + share) / len(counts))
        chance = row["baselines"]["chance"]
        assert chance["accuracy"] == pytest.approx(1 / n_classes) and chance["auroc_macro_ovr"] == 0.5


def test_zeroshot_demo_lists_hold_the_labelled_test_images(demo_bench):
    for task in DEMO_TASKS:
        records = json.loads((demo_bench["lists"] / f"{task}.json").read_text())
        assert [r["label"] for r in records] == demo_bench["labels"][task]
        assert all((demo_bench["lists"] / r["image"]).is_file() for r in records)

"""bench/gpu_check.sh: the script parses, and (opt-in, slow) its --dry-run runs every step on the CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
@pytest.mark.rehearsal
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_runs_every_step_in_bf16(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, timeout=1500, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    log = (tmp_path / "gpu_check.log").read_text()
    status = {r["step"]: r for r in records if "rc" in r}
    for step in ("train_step", "retrieval_eval", "demo_pretrain_torchrun", "vis_lesions", "itm_attributes"):
        assert status[step]["rc"] == 0, (step, status[step], log[-3000:])
    env_line = next(r for r in records if r["step"] == "env")
    assert {"timm", "transformers", "torchvision"} <= set(env_line["versions"]) and not env_line["missing"]
    variants = {r["variant"] for r in records if r["step"] == "train_step" and "variant" in r}
    assert {"fast:bf16", "fast:bf16:ckpt", "plain:bf16"} <= variants  # the precision of a GPU run
    retrieval = next(r for r in records if r["step"] == "retrieval_eval" and "metrics_identical" in r)
    assert retrieval["precision"] == "bf16" and retrieval["metrics_identical"]
    assert next(r for r in records if r["step"] == "demo_pretrain")["process_group"] == "process group gloo"


def test_the_carried_yaml_wheel_installs_and_reads_a_config(tmp_path):
    """A device image without ruamel.yaml gets it from .whl/ (pure Python, no dependency)."""
    (wheel,) = (ROOT / ".whl").glob("ruamel_yaml-*-py3-none-any.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, capture_output=True)
    code = ("import ruamel.yaml, sys; assert ruamel.yaml.__file__.startswith(sys.argv[1]), ruamel.yaml.__file__; "
            "from ruamel.yaml import YAML; print(YAML(typ='safe').load(open(sys.argv[2]))['init_lr'])")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path / "site"), str(ROOT / "configs" / "pretrain.yaml")],
                         env={"PYTHONPATH": str(tmp_path / "site")}, capture_output=True, text=True, check=True)
    assert float(out.stdout) == 3e-5

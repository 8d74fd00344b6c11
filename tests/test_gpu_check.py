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
@pytest.mark.skipif(os.environ.get("MEDVL_GPU_CHECK_DRY") != "1",
                    reason="about 55 s on an idle 2-core CPU, minutes when shared: set MEDVL_GPU_CHECK_DRY=1")
def test_gpu_check_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "BUDGET_S": "600"}
    subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, check=True, timeout=900,
                   capture_output=True)
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    status = {r["step"]: r for r in records if "rc" in r}
    for step in ("train_step", "retrieval_eval", "demo_pretrain_torchrun", "vis_lesions", "itm_attributes"):
        assert status[step]["rc"] == 0, (step, status[step])
    retrieval = next(r for r in records if r["step"] == "retrieval_eval" and "metrics_identical" in r)
    assert retrieval["metrics_identical"]
    assert next(r for r in records if r["step"] == "demo_pretrain")["process_group"] == "process group gloo"

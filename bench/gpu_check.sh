#!/usr/bin/env bash
# The GPU check, in one script that stays under 8 minutes on one H200 and prints JSON lines:
#
#   1. environment: torch, the card, the project's imports (nothing is downloaded: a missing package is
#      installed from wheels carried in .whl/, else by `pip install -r requirements.txt` if pip can reach
#      an index, else the script says which package to carry);
#   2. base-size pre-training step (ViT-B/16 + BERT-base, 224 px): bf16 and fp32 images/s, MFU (FLOPs
#      counted by torch.utils.flop_counter / step time / 989 TFLOP/s, the dense bf16 peak of H100/H200
#      SXM), peak memory with and without gradient checkpointing, and the straightforward path (BLIP's
#      way) in bf16 for the ratio                                        -> bench/train_step.py --sweep
#   3. retrieval evaluation at base size, 384 px, k_test 256, 1,000 generated images: fast path against
#      BLIP's per-row loop, bf16, same metrics                        -> bench/retrieval_eval.py
#   4. a 60-epoch demo pre-training through torchrun with the process group forced at world size 1
#      (MEDVL_FORCE_DIST=1: NCCL for CUDA tensors, gloo for CPU ones), time-boxed: a run stopped by the
#      box writes its checkpoint at the step boundary and the last epoch reached is reported; if torchrun
#      fails at once, the demo is pre-trained without it;
#   5. bench/vis_lesions.py and bench/itm_attributes.py on that checkpoint.
#
# Every step runs under `timeout`, each box cut to what is left of BUDGET_S (470 s), so the whole stays
# under 8 minutes. The dry run checks that every step works, not how fast: its boxes are four times
# longer, for a shared CPU. Usage, from the repository root:
#
#   bash bench/gpu_check.sh                 # on the GPU machine
#   bash bench/gpu_check.sh --dry-run       # tiny sizes on the CPU, the same steps (tests/test_gpu_check.py)
#
# JSON lines go to stdout and to $OUT/gpu_check.jsonl ($OUT: the device tool's folder, else
# /tmp/gpu_check); each step's full log is appended to $OUT/gpu_check.log.
set -u
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
[ "${DEVICE:-}" = "cpu" ] && DRY=1
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
RESULTS=${OUT:-/tmp/gpu_check}
if [ -n "${GPU_CHECK_WORK:-}" ]; then
    WORK=$GPU_CHECK_WORK
else
    WORK=$(mktemp -d /tmp/gpu_check_work.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
fi
SCALE=1
[ "$DRY" = 1 ] && SCALE=4
BUDGET_S=${BUDGET_S:-$((470 * SCALE))}
START=$(date +%s)
mkdir -p "$RESULTS" "$WORK"
JSONL="$RESULTS/gpu_check.jsonl"
LOG="$RESULTS/gpu_check.log"
: >"$JSONL"
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

emit() { echo "$1" | tee -a "$JSONL"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# box WANT RESERVE: WANT seconds, or less so that RESERVE seconds stay for the steps after this one.
box() {
    local want=$(($1 * SCALE)) avail=$(($(left) - $2 * SCALE))
    [ "$avail" -lt "$want" ] && echo "$avail" || echo "$want"
}

# run NAME SECONDS CMD...: run CMD under timeout, keep its log, print its one-line JSON records and a
# status line. Multi-line JSON (the probes print indented JSON) is compacted first.
run() {
    local name=$1 limit=$2
    shift 2
    if [ "$limit" -le 5 ]; then
        emit "{\"step\": \"$name\", \"skipped\": \"no time left in the ${BUDGET_S} s budget\"}"
        return 124
    fi
    local t0 rc
    t0=$(date +%s)
    timeout -k 20 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    rc=$?
    { echo "=== $name (rc $rc): $*"; tail -n 60 "$WORK/$name.err"; } >>"$LOG"
    "$PY" - "$WORK/$name.out" "$name" >>"$JSONL.tmp" <<'EOF'
import json, sys
text, name = open(sys.argv[1]).read(), sys.argv[2]
try:
    records = [json.loads(text)]  # one indented object
except ValueError:
    records = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
for r in records:
    print(json.dumps({"step": name, **r} if isinstance(r, dict) else {"step": name, "value": r}))
EOF
    if [ -s "$JSONL.tmp" ]; then
        tee -a "$JSONL" <"$JSONL.tmp"
        rm -f "$JSONL.tmp"
    fi
    emit "{\"step\": \"$name\", \"rc\": $rc, \"timed_out\": $([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false), \"seconds\": $(($(date +%s) - t0)), \"limit_s\": $limit}"
    return $rc
}

# -- 1. environment ---------------------------------------------------------------------------------
IMPORTS="import torch, torchvision, timm, transformers, tokenizers, ruamel.yaml, cv2, PIL, numpy, matplotlib"
if ! "$PY" -c "$IMPORTS" 2>>"$LOG"; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        timeout 90 "$PY" -m pip install -q --retries 0 --timeout 10 -r requirements.txt >>"$LOG" 2>&1
    fi
fi
ENV_JSON=$("$PY" - <<'EOF' 2>>"$LOG"
import importlib, json
import torch
missing, versions = [], {}
for m in ("torchvision", "timm", "transformers", "tokenizers", "ruamel.yaml", "cv2", "PIL", "numpy", "matplotlib"):
    try:
        versions[m] = getattr(importlib.import_module(m), "__version__", "?")
    except ImportError as e:
        missing.append(f"{m} ({e})")
cuda = torch.cuda.is_available()
print(json.dumps({"step": "env", "torch": torch.__version__, "cuda_build": torch.version.cuda,
                  "versions": versions, "cuda": cuda,
                  "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
                  "cpus": __import__("os").cpu_count(), "missing": missing,
                  "hint": "carry wheels of the missing packages in .whl/ (device README)" if missing else None}))
EOF
) || ENV_JSON='{"step": "env", "error": "python or torch does not import"}'
emit "$ENV_JSON"

if [ "$DRY" = 1 ]; then
    DEV=cpu
    STEP_ARGS=(--size tiny --batch 4 --steps 1 --warmup 1 --queue-size 256 --variants fast:bf16,fast:bf16:ckpt,fast:fp32,plain:bf16)
    RET_IMAGES=12
    RET_ARGS=(--image-sizes 64 --k-test 8 --width 32 --heads 2 --vit-depth 1 --text-layers 1 --batch 8 --bf16)
    DEMO_ARGS=(--train 24 --val 6 --test 6 --seed 0)
    EPOCHS=2
    DEMO_OPTS=(batch_size=8 num_workers=0 queue_size=16)
else
    DEV=cuda
    STEP_ARGS=(--size base --batch 64 --steps 8 --warmup 3 --variants fast:bf16,fast:bf16:ckpt,fast:fp32,plain:bf16)
    RET_IMAGES=1000
    RET_ARGS=(--size base --image-sizes 384 --k-test 256 --bf16 --batch 64 --itm-batch 256)
    DEMO_ARGS=()
    EPOCHS=60
    DEMO_OPTS=(num_workers=4)
fi

# The demo set and the retrieval set are drawn on the CPU while the GPU runs the step benchmark.
"$PY" -m data.synthetic.demo --out "$WORK/demo" "${DEMO_ARGS[@]}" >"$WORK/demo_data.out" 2>&1 &
DEMO_PID=$!
"$PY" -m data.synthetic.demo --out "$WORK/retrieval_data" --train 0 --val 0 --test "$RET_IMAGES" --seed 0 \
    >"$WORK/retrieval_data.out" 2>&1 &
RET_PID=$!

# -- 2. the pre-training step --------------------------------------------------------------------------
run train_step "$(box 100 350)" "$PY" -m bench.train_step --sweep --device "$DEV" "${STEP_ARGS[@]}"

# -- 3. retrieval evaluation ---------------------------------------------------------------------------
wait "$RET_PID"
run retrieval_eval "$(box 130 220)" "$PY" -m bench.retrieval_eval --device "$DEV" --data "$WORK/retrieval_data" \
    --images "$RET_IMAGES" "${RET_ARGS[@]}"

# -- 4. demo pre-training through torchrun, NCCL at world size 1 ---------------------------------------
wait "$DEMO_PID"
emit "{\"step\": \"demo_data\", \"rc\": $?}"
DEMO_OUT="$WORK/demo_pretrain"
PRE_OPTS=(max_epoch=$EPOCHS "train_file=[$WORK/demo/pretrain.json]" "tokenizer=$WORK/demo/tokenizer" print_freq=100000
          "${DEMO_OPTS[@]}")
t_demo=$(date +%s)
run demo_pretrain_torchrun "$(box 240 60)" env MEDVL_FORCE_DIST=1 "$PY" -m torch.distributed.run --standalone \
    --nproc_per_node=1 pretrain.py --config configs/demo_pretrain.yaml --output_dir "$DEMO_OUT" --device "$DEV" \
    --overwrite --options "${PRE_OPTS[@]}"
rc=$?
BACKEND=$(grep -o "process group [a-z:,]*" "$WORK/demo_pretrain_torchrun.err" | head -n 1)
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && [ $(($(date +%s) - t_demo)) -lt 60 ]; then
    # torchrun or NCCL failed at once: the probes still get a trained model, without the process group.
    run demo_pretrain_plain "$(box 240 60)" "$PY" pretrain.py --config configs/demo_pretrain.yaml \
        --output_dir "$DEMO_OUT" --device "$DEV" --overwrite --options "${PRE_OPTS[@]}"
fi
"$PY" - "$DEMO_OUT/log.txt" "$BACKEND" <<'EOF' | tee -a "$JSONL"
import json, sys
try:
    epochs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    epochs = [e for e in epochs if "global_step" not in e]
except OSError:
    epochs = []
last = epochs[-1] if epochs else {}
times = sorted(e.get("epoch_time_s", 0) for e in epochs)
print(json.dumps({"step": "demo_pretrain", "process_group": sys.argv[2] or None, "epochs_done": len(epochs),
                  "last_epoch": {k: v for k, v in last.items() if isinstance(v, (int, float))},
                  "median_epoch_s": times[len(times) // 2] if times else None}))
EOF

# -- 5. do the maps point at the lesions, and what does the ITM head tell apart? ------------------------
CKPT="$DEMO_OUT/checkpoint_last.pth"
run vis_lesions "$(box 32 28)" "$PY" -m bench.vis_lesions --checkpoint "$CKPT" --demo "$WORK/demo"
run itm_attributes "$(box 28 0)" "$PY" -m bench.itm_attributes --checkpoint "$CKPT" --demo "$WORK/demo"

emit "{\"step\": \"done\", \"seconds\": $(($(date +%s) - START)), \"budget_s\": $BUDGET_S, \"dry_run\": $([ "$DRY" = 1 ] && echo true || echo false)}"

#!/usr/bin/env bash
# CI lane: the declared lower bounds. A fresh virtual environment gets every requirement of
# requirements-dev.txt at exactly its floor (pip constraints written from the `>=` bounds), checks that
# it holds them, then runs the tests that train, evaluate and load data with them.
# Exits non-zero when an install fails, a version is off its floor, or a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lowest
# The tests of the model (timm, transformers, tokenizers, safetensors), pre-training and retrieval
# (torch.distributed), configs (ruamel.yaml), data and shards (webdataset, pillow, opencv), clinical
# volumes (pydicom, nibabel, nilearn), OCR (rapidocr, google-cloud-vision), scraping (requests, urllib3,
# lxml), the training loop's logging (tensorboard, tqdm), transformers' BLIP and the hub (huggingface-hub)
# and the caption metrics.
TESTS=(
  tests/test_model.py tests/test_pretrain.py tests/test_retrieval.py tests/test_train_loop.py
  tests/test_losses.py tests/test_config.py tests/test_data.py tests/test_speed_paths.py
  tests/test_distributed.py tests/test_generate.py tests/test_embed.py tests/test_shards.py
  tests/test_clinical.py tests/test_ocr.py tests/test_figures_panels.py tests/test_jats.py
  tests/test_scrape_http.py tests/test_scrape_pmc.py tests/test_scrape_cloud.py
  tests/test_hf_blip.py tests/test_offline.py tests/test_caption_metrics.py tests/test_adapter_layouts.py
)

start=$SECONDS
rm -rf "$VENV"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
python .ci/lowest_constraints.py requirements-dev.txt > "$constraints"
pip install -q -r requirements-dev.txt -c "$constraints"
python .ci/lowest_constraints.py --check requirements-dev.txt
echo "lowest: environment built in $((SECONDS - start)) s"

set +e
python -m pytest -q -p no:cacheprovider "${TESTS[@]}"
rc=$?
set -e
echo "lowest: finished in $((SECONDS - start)) s (pytest exit $rc)"
if [ "$rc" -eq 5 ]; then
  echo "lowest: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"

#!/usr/bin/env bash
# The prepared GPU check (issue 14 item 4): at most 8 minutes on a GPU machine with only this repository and
# its Python (python3 with torch, torchvision, opencv, tensorboard, tqdm; no Ray, no .venv).
#
#   bench/gpu_check.sh                # GPU: results in $OUT, else results/gpu/
#   bench/gpu_check.sh --cpu-smoke    # CPU: everything shrunk, every path but CUDA's (results in $OUT or /tmp)
#
# Assets travel in a repo-relative folder the caller carries (default shared-carry/, --carry DIR):
#   shared-carry/assets/imagenet-1k-256/…              images (DEEPSIM_ASSETS layout)
#   shared-carry/deepsim-cache/weights/alexnet_tv.pt   pretrained AlexNet (DEEPSIM_CACHE layout, `make weights`)
# What is missing is said in one line each and replaced (synthetic images, alexnet-random). Details and the
# sections' time shares: bench/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " == *" --cpu-smoke "* ]]; then
  DEST=${OUT:-${TMPDIR:-/tmp}/gpu-check-smoke}
else
  DEST=${OUT:-results/gpu}
fi
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
# 480 s hard stop; the Python side plans its sections inside 450 s and writes its results after each one
timeout --signal=TERM --kill-after=10 480 "$PY" -m bench.gpu_check --out "$DEST" --budget-s 450 "$@" 2>&1 \
  | tee "$DEST/gpu_check.log"
status=${PIPESTATUS[0]}
echo "gpu_check: exit $status; results in $DEST (gpu_check.json, summary.md, grid-paper-pool5.jpg, gpu_check.log)"
exit "$status"

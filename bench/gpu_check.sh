#!/usr/bin/env bash
# The prepared GPU check (issue 24): at most 4 minutes on a lent GPU machine that has only this repository,
# the carried folder and python3 with torch and torchvision (no Ray, onnx2torch or lpips, no .venv).
#
#   python -m bench.gpu_check --prepare          # here, once per commit: .carry/gpu-check/ (≤ 30 MiB)
#   DEEPSIM_COMMIT=<sha> bash bench/gpu_check.sh # there (exact device call: bench/README.md); results in $OUT
#   bash bench/gpu_check.sh --cpu-smoke          # here: every section shrunk on the CPU, with Ray, onnx2torch
#                                                # and lpips made unimportable (bench/device_python)
# Sections and their time caps: bench/gpu_check.py. Each section's status is in $OUT/gpu_check.json as soon
# as it ends; the process is stopped at 235 s whatever happens.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " == *" --cpu-smoke "* ]]; then
  DEST=${OUT:-${TMPDIR:-/tmp}/gpu-check-smoke}
  LIMIT=1200
  export PYTHONPATH="$PWD/bench/device_python${PYTHONPATH:+:$PYTHONPATH}"
else
  DEST=${OUT:-results/gpu}
  LIMIT=235
fi
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
timeout --signal=TERM --kill-after=5 "$LIMIT" "$PY" -m bench.gpu_check --out "$DEST" "$@" 2>&1 \
  | tee "$DEST/gpu_check.log"
status=${PIPESTATUS[0]}
[[ $status == 124 ]] && echo "gpu_check: stopped at $LIMIT s; the sections that ended are in $DEST/gpu_check.json"
echo "gpu_check: exit $status; results in $DEST (gpu_check.json, summary.md, grid-paper-pool5.jpg, gpu_check.log)"
exit "$status"

#!/usr/bin/env bash
# GPU speed check (docs/speed.md): DIRK and CAD-CAM on CIFAR-10-shaped synthetic data at the paper preset
# (resnet34c; batch 64, then batch 512), our pipeline (fp32 and bf16 autocast, channels_last; then torch.compile
# with bf16) against the reference pipeline (DataLoader, 4 workers, PIL + per-image torchvision, fp32), samples/s
# and their ratio, in one throughput.py run per (batch, compile) so every ratio is measured side by side.
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine; estimated 6-8 minutes on one H100 (compile time
#                                                # dominates; GPU_CHECK_COMPILE=off alone takes about 3)
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh  # dry run of the same path on tiny settings (CPU is fine)
#
# Writes gpu-check.md (and one file per run) to $OUT when set, else benchmarks/results/gpu/.
# Knobs: GPU_CHECK_BATCHES ("64 512"), GPU_CHECK_COMPILE ("off on"), GPU_CHECK_STEPS (10), GPU_CHECK_ROUNDS (3),
# GPU_CHECK_WARMUP (6), GPU_CHECK_TRAIN (50000), GPU_CHECK_RUN_TIMEOUT (200 s per run), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${OUT:-benchmarks/results/gpu}
mkdir -p "$DEST"
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  defaults=(256 "16 32" 2 1 1 "--backbone cnn-xs --workers 1")
else
  defaults=(50000 "64 512" 10 3 6 "")
fi
TRAIN=${GPU_CHECK_TRAIN:-${defaults[0]}}
BATCHES=${GPU_CHECK_BATCHES:-${defaults[1]}}
STEPS=${GPU_CHECK_STEPS:-${defaults[2]}}
ROUNDS=${GPU_CHECK_ROUNDS:-${defaults[3]}}
WARMUP=${GPU_CHECK_WARMUP:-${defaults[4]}}
EXTRA=${defaults[5]}
COMPILE=${GPU_CHECK_COMPILE:-off on}
DATA="synthetic:size=32,classes=10,train=$TRAIN,test=64"
REPORT="$DEST/gpu-check.md"
started=$(date +%s)
{
  echo "# GPU check: ours vs reference, DIRK and CAD-CAM, CIFAR-10-shaped synthetic data"
  echo
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$PY" -c "import os, torch; d = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device (CPU)'; print(f'device: {d}; torch {torch.__version__}; {os.cpu_count()} CPUs')"
  echo
} > "$REPORT"
# Compile-off runs first: if the session runs short, the main numbers are already written.
for compile in $COMPILE; do
  for batch in $BATCHES; do
    flags=()
    variants="fp32,bf16"
    if [ "$compile" = on ]; then flags+=(--compile); variants="bf16"; fi
    name="b${batch}-compile-${compile}"
    echo "## batch $batch, compile $compile" >> "$REPORT"
    # shellcheck disable=SC2086
    timeout "${GPU_CHECK_RUN_TIMEOUT:-200}" "$PY" benchmarks/throughput.py --methods dirk,cad-cam \
      --dataset "$DATA" --preset paper --like cifar10 --mean-size 4 --batch-size "$batch" --variants "$variants" \
      --steps "$STEPS" --rounds "$ROUNDS" --warmup "$WARMUP" --no-step-ratio --out "$DEST/$name.md" \
      "${flags[@]}" $EXTRA > "$DEST/$name.log" 2>&1 \
      || { echo "FAILED or timed out (exit $?), see $name.log:"; tail -5 "$DEST/$name.log"; } >> "$REPORT"
    [ -f "$DEST/$name.md" ] && cat "$DEST/$name.md" >> "$REPORT"
    echo "elapsed $(( $(date +%s) - started )) s" | tee -a "$REPORT" >&2
    echo >> "$REPORT"
  done
done
cat "$REPORT"

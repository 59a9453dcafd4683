#!/usr/bin/env bash
# The ten-minute proof for the first machine with an NVIDIA GPU, TensorRT and pycuda or cuda-python:
# a small model trained on synthetic data (3 epochs), its fp32 / fp16 / int8 graphs, `hfr-edge build`
# of an fp32, --fp16 and --int8 engine, each engine compared with ONNX Runtime on the CPU over the
# same frames (max map / score difference, NaN/inf, verdict flips), each engine's layer precisions
# (TensorRT's engine inspector), `bench` at batch 1 and 8, ONNX Runtime's CUDA / TensorRT providers,
# PyTorch CUDA latency, `pytest -m gpu`. Writes gpu_check.json (and <precision>.layers.json) to
# the folder given, else $OUT, else benchmarks/results. Without TensorRT or a GPU it prints one line
# saying what it could not do and why, measures what it can, and exits 0. Under 8 minutes.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
: >"$WORK/steps.tsv"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # works even where the editable install cannot be made
DEADLINE=$(( $(date +%s) + 460 ))  # every step ends by 7m40s

# step NAME TIMEOUT_S CMD...: run quietly (output in WORK/NAME.log) within its limit and the deadline,
# record seconds and exit code; a failed step is recorded, it does not end the check.
step() {
  local name=$1 limit=$2 t0 t1 rc=0 left
  shift 2
  left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then rc=124; t0=$(date +%s.%N); t1=$t0; else
    t0=$(date +%s.%N)
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
  fi
  printf '%s\t%s\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" "$rc" >>"$WORK/steps.tsv"
}
HFR=("$PY" -m hfr_edge)
CHECK=("$PY" "$PWD/benchmarks/gpu_check.py")
flag() { "$PY" -c "import json,sys; print(int(bool(json.load(open(sys.argv[1]))[sys.argv[2]])))" "$WORK/probe.json" "$1" 2>/dev/null || echo 0; }

step probe 90 "${CHECK[@]}" probe "$WORK"
CAN_BUILD=$(flag can_build)  # TensorRT, a CUDA binding and a GPU
ORT_GPU=$(flag ort_gpu)  # ONNX Runtime's CUDA or TensorRT provider
TORCH_CUDA=$(flag torch_cuda)

[ "$TORCH_CUDA" = 1 ] && step torch 120 "${CHECK[@]}" torch "$WORK"
if [ "$CAN_BUILD" = 1 ] || [ "$ORT_GPU" = 1 ]; then  # a model to build or run on the GPU
  step data 60 "${CHECK[@]}" data "$WORK"
  cd "$WORK"
  step train 120 "${HFR[@]}" train parts -o ckpt.pt --epochs 3 --seed 0
  step export 60 "${HFR[@]}" export ckpt.pt -o model.onnx
  step export_fp16 60 "${HFR[@]}" export ckpt.pt --precision fp16 -o model.fp16.onnx
  step calibrate 120 "${HFR[@]}" calibrate model.onnx --images parts/train/good -n 100 -o model.int8.onnx
  cd - >/dev/null
  [ -f "$WORK/model.onnx" ] && [ "$ORT_GPU" = 1 ] && step ort 90 "${CHECK[@]}" ort "$WORK"
fi
if [ "$CAN_BUILD" = 1 ] && [ -f "$WORK/model.onnx" ]; then
  cd "$WORK"
  step build_fp32 150 "${HFR[@]}" build model.onnx -o fp32.engine --timing-cache timing.cache
  step build_fp16 150 "${HFR[@]}" build model.onnx --fp16 -o fp16.engine --timing-cache timing.cache
  step build_int8 150 "${HFR[@]}" build model.onnx --int8 -o int8.engine --timing-cache timing.cache
  cat build_*.log >build.log 2>/dev/null
  cd - >/dev/null
  step compare 90 "${CHECK[@]}" compare "$WORK"
  step inspect 60 "${CHECK[@]}" inspect "$WORK"
  step bench 90 "${CHECK[@]}" bench "$WORK"
  step pytest_gpu 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
  cp "$WORK/pytest_gpu.log" "$WORK/pytest.log" 2>/dev/null
fi
"${CHECK[@]}" report "$WORK" "$OUT_DIR"
exit 0

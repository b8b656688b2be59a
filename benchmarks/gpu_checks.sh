#!/usr/bin/env bash
# The GPU checks of the fused sampled-linear kernel, in one run on one CUDA GPU:
#
#   1. the kernel's tests on CUDA (tests/ops/test_fused_sampled_linear.py: forward and every
#      gradient against the torch reference given the same noise, for all options and dtypes;
#      the in-kernel noise's moments; reproducibility);
#   2. benchmarks/sampled_linear.py: its equality check over every option and dtype, then the
#      forward and forward + backward times and the peak extra memory of the fused kernel, the
#      torch reference and F.linear for every shape, in float32 and bfloat16;
#   3. benchmarks/sampled_linear.py --epoch: one epoch of the sparse-VD LeNet-300-100 with the
#      kernel and one with the reference, from the same seed and batches.
#
# Usage, from the repository root, with pyro-bnn importable (pip install -e .):
#
#     bash benchmarks/gpu_checks.sh RESULTS_DIR
#     bash benchmarks/gpu_checks.sh --smoke RESULTS_DIR   # CPU, Triton's interpreter, tiny shapes
#
# Each step has its own time limit and the steps run even when one before failed, so one run
# brings back all it can.  RESULTS_DIR gets each step's log and the benchmark's JSON lines
# (results.jsonl), to be read and added to benchmarks/results.jsonl and RESULTS.md.  The exit
# status is that of the first step that failed, 0 when none did.
set -uo pipefail

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
    shift
fi
if [[ $# -ne 1 ]]; then
    echo "usage: bash benchmarks/gpu_checks.sh [--smoke] RESULTS_DIR" >&2
    exit 2
fi
results=$1
mkdir -p "$results"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output to NAME.log too.
step() {
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most $seconds s): $*"
    local started=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$results/$name.log"
    local code=${PIPESTATUS[0]}
    echo "== $name: exit $code after $((SECONDS - started)) s"
    if [[ $code -ne 0 && $status -eq 0 ]]; then
        status=$code
    fi
}

"$python" - <<'EOF' | tee "$results/machine.log"
import torch
try:
    import triton
    version = triton.__version__
except ImportError:
    version = "not installed"
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__}, triton {version}, {device}")
EOF

if [[ $smoke -eq 1 ]]; then
    step tests 300 "$python" -m pytest -q -p no:cacheprovider tests/ops/test_fused_sampled_linear.py -k "noise or reproducible"
    step kernel 120 "$python" benchmarks/sampled_linear.py --smoke --output "$results/results.jsonl"
    step epoch 120 "$python" benchmarks/sampled_linear.py --smoke --epoch --skip-equality --output "$results/results.jsonl"
else
    step tests 150 "$python" -m pytest -q -p no:cacheprovider tests/ops/test_fused_sampled_linear.py
    step kernel 240 "$python" benchmarks/sampled_linear.py --output "$results/results.jsonl"
    step epoch 120 "$python" benchmarks/sampled_linear.py --epoch --skip-equality --batch-size 128 --output "$results/results.jsonl"
fi
exit $status

#!/usr/bin/env bash
# One-shot check of smelt's CUDA path on one Hopper GPU (132 SMs; written for an H200)
# with python3 + torch. Run from anywhere:  scripts/gpu-check.sh
#
# Steps (each under its own time limit; the whole run stays under 8 minutes):
#   build     cargo build --release (binary and the kernel tests)
#   kernels   every kernel family on cuda vs the interpreter on random inputs
#             (runtime/tests/gpu_kernels.rs with SMELT_GPU_TEST_DEVICE=cuda)
#   gpu-check smelt gpu-check: bf16 4096^3 matmul (CUDA events, warm-up, median),
#             compute slowdown with N SMs reserved vs SMs/(SMs-N), %smid of comm and
#             compute CTAs, loopback all-to-all overlap with compute
#   cublas    torch.matmul on the same shapes, timed the same way; ratio smelt/cuBLAS
#   train     20 steps of examples/gpt.smelt on cuda and on cpu; losses compared
# Logs go to $OUT (or a temporary directory); a table is printed last. Any failed step
# makes the exit code non-zero.
set -uo pipefail

cd "$(dirname "$0")/.."
LOGS="${OUT:-$(mktemp -d)}"
mkdir -p "$LOGS"
TARGET="${SMELT_GPU_TARGET:-h200}"
COMM_SMS="${SMELT_COMM_SMS:-20}"
SMELT=target/release/smelt
declare -a ROWS=()
FAILED=0
# Every step's limit is cut to what is left of 7m40s, so the whole run ends in time.
DEADLINE=$((SECONDS + 460))

row() { ROWS+=("$(printf '%-10s %-5s %s' "$1" "$2" "$3")"); }

# run NAME SECONDS CMD...: runs CMD with a time limit, logging to $LOGS/NAME.log;
# on failure prints the log's tail and records FAIL.
run() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s): $*" | tee "$LOGS/$name.log"
    if ((limit < 5)); then
        echo "!! $name FAILED: no time left in the 8-minute budget" | tee -a "$LOGS/$name.log" >&2
        FAILED=1
        return 1
    fi
    local start=$SECONDS rc=0
    timeout "$limit" "$@" >>"$LOGS/$name.log" 2>&1 || rc=$?
    if ((rc == 0)); then
        echo "   ok in $((SECONDS - start))s"
        return 0
    fi
    echo "!! $name FAILED (exit $rc after $((SECONDS - start))s; limit ${limit}s); last lines of $LOGS/$name.log:" >&2
    tail -n 30 "$LOGS/$name.log" >&2
    FAILED=1
    return 1
}

# value KEY FILE: the first word after "KEY " in FILE (empty if absent).
value() { grep -m1 "^$1 " "$2" | awk '{print $2}'; }

echo "gpu-check: logs in $LOGS"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L | tee "$LOGS/gpu.log"; then
    echo "!! no NVIDIA GPU visible (nvidia-smi)" >&2
    exit 2
fi
if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>>"$LOGS/gpu.log"; then
    echo "!! python3 with a CUDA-enabled torch is required (see $LOGS/gpu.log)" >&2
    exit 2
fi

# 1. Build (release: the binary and the kernel test, sharing dependencies).
if run build 240 cargo build --release --bin smelt &&
    run build-tests 60 cargo test --release -p smelt-runtime --test gpu_kernels --no-run; then
    row build PASS "release"
else
    row build FAIL "see $LOGS/build.log, $LOGS/build-tests.log"
    printf '%s\n' "${ROWS[@]}"
    exit 1
fi

# 2. Every kernel family on the GPU against the interpreter.
if run kernels 90 env SMELT_GPU_TEST_DEVICE=cuda cargo test --release -p smelt-runtime --test gpu_kernels; then
    row kernels PASS "$(grep -m1 '^test result' "$LOGS/kernels.log")"
else
    row kernels FAIL "see $LOGS/kernels.log"
fi

# 3. smelt's own measurements.
if run gpu-check 90 "$SMELT" gpu-check --target "$TARGET" --comm-sms "$COMM_SMS" --size 4096 --repeats 30; then
    row gpu-check PASS "$(grep -m1 '^partition' "$LOGS/gpu-check.log")"
else
    row gpu-check FAIL "see $LOGS/gpu-check.log"
fi
G="$LOGS/gpu-check.log"
SMELT_MS=$(value matmul_ms "$G")

# 4. cuBLAS through torch, timed like smelt: events, warm-up, median, random inputs.
cat >"$LOGS/cublas.py" <<'PY'
import statistics, torch
n = 4096
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(10):
    torch.matmul(a, b)
torch.cuda.synchronize()
times = []
for _ in range(30):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); torch.matmul(a, b); e.record(); e.synchronize()
    times.append(s.elapsed_time(e))
ms = statistics.median(times)
print(f"torch_ms {ms:.4f}")
print(f"torch_tflops {2 * n**3 / (ms * 1e-3) / 1e12:.1f}")
PY
if run cublas 45 python3 "$LOGS/cublas.py"; then
    TORCH_MS=$(value torch_ms "$LOGS/cublas.log")
    if [[ -n "$SMELT_MS" && -n "$TORCH_MS" ]]; then
        RATIO=$(python3 -c "print(f'{$SMELT_MS / $TORCH_MS:.2f}')")
        row matmul INFO "bf16 4096^3: smelt ${SMELT_MS} ms ($(value matmul_tflops "$G") TFLOP/s), cuBLAS ${TORCH_MS} ms ($(value torch_tflops "$LOGS/cublas.log") TFLOP/s), smelt/cuBLAS time ${RATIO}x"
    else
        row matmul FAIL "no smelt matmul time (gpu-check failed?)"
        FAILED=1
    fi
else
    row cublas FAIL "see $LOGS/cublas.log"
fi
if grep -q '^slowdown' "$G"; then
    row slowdown INFO "$(grep -m1 '^slowdown' "$G") (partitioned/full matmul time)"
fi
if grep -q '^smid' "$G"; then
    row smid INFO "$(grep -m1 '^smid' "$G")"
fi
if grep -q '^overlap' "$G"; then
    row overlap INFO "$(grep -m1 '^overlap' "$G")"
fi

# 5. Training: 20 steps on cuda and on cpu from the same seed.
train_on() {
    run "train-$1" "$2" "$SMELT" train examples/gpt.smelt --data examples/data/genesis.txt \
        --steps 20 --batch 4 --seed 1 --log "$LOGS/train-$1.jsonl" --device "$1" \
        --target "$TARGET" --comm-sms "$COMM_SMS"
}
rm -f "$LOGS"/train-*.jsonl
# cuda includes the driver JIT-compiling every kernel of the step on the first run.
if train_on cuda 120 && train_on cpu 90; then
    if CMP=$(python3 - "$LOGS/train-cuda.jsonl" "$LOGS/train-cpu.jsonl" <<'PY' 2>&1
import json, sys
cuda, cpu = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
assert len(cuda) == len(cpu) == 20, f"{len(cuda)} cuda and {len(cpu)} cpu steps, not 20"
worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(cuda, cpu))
print(f"losses {cpu[0]:.4f} -> {cpu[-1]:.4f} (cpu), {cuda[0]:.4f} -> {cuda[-1]:.4f} (cuda); worst relative gap {worst:.2e}")
assert worst < 2e-2, "cuda and cpu losses differ by more than 2%"
PY
    ); then
        row train PASS "$CMP"
    else
        row train FAIL "$CMP"
        FAILED=1
    fi
else
    row train FAIL "see $LOGS/train-cuda.log, $LOGS/train-cpu.log"
fi

echo
echo "smelt gpu-check on $(head -n1 "$LOGS/gpu.log") (target $TARGET, $COMM_SMS comm SMs; logs: $LOGS)"
printf '%s\n' "${ROWS[@]}" | tee "$LOGS/table.txt"
exit $FAILED

#!/usr/bin/env bash
# One-shot check of smelt's CUDA path on one Hopper GPU (H100 or H200, 132 SMs) with
# python3 + torch, from the prebuilt bundle of scripts/gpu-bundle.sh: the GPU machine
# needs no Rust toolchain and no network. Without .gpu-bundle/ it builds one with cargo
# first (outside the time budget).
#
#   scripts/gpu-check.sh             on a GPU machine
#   scripts/gpu-check.sh --dry-run   anywhere: as far as it goes without a driver (the
#                                    bundle is complete, both binaries start, and
#                                    `smelt gpu-check` says "no CUDA driver found")
#
# Steps, each under its own time limit; the limits add up to the 460 s budget, so the
# whole run ends within 8 minutes on either card:
#   device    `smelt gpu-check --info`: the GPU's name, SM count and driver, from which
#             the target (h100 or h200) is picked; record/wait/launch across the
#             compute and communication streams (green contexts) is probed here first
#   kernels   every kernel family on cuda vs the interpreter on random inputs (the
#             gpu_kernels test binary with SMELT_GPU_TEST_DEVICE=cuda; mma.sync cases on
#             an sm_90 target, wgmma cases on sm_90a)
#   gpu-check bf16 4096^3 matmul, verified against a CPU reference on sampled rows before
#             it is timed (CUDA events, warm-up, median); registers and resident blocks
#             from the driver; compute slowdown with N SMs reserved vs the split the
#             driver made; %smid of comm and compute CTAs; a loopback all-to-all beside
#             compute (unclamped overlap)
#   cublas    torch.matmul on the same shapes, timed the same way; ratio smelt/cuBLAS
#   train     20 steps of examples/gpt.smelt on cuda and on cpu from the same seed:
#             per-step losses within 1e-3 (relative) and every parameter after the steps
#   nccl      (smelt has no NCCL engine yet: reported as not run)
# Logs go to $OUT when set (else a temporary directory); the table is printed last. Any
# failed step makes the exit code non-zero.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=0
case "${1:-}" in
--dry-run) DRY_RUN=1 ;;
"") ;;
*)
    echo "usage: scripts/gpu-check.sh [--dry-run]" >&2
    exit 2
    ;;
esac
LOGS="${OUT:-$(mktemp -d)}"
mkdir -p "$LOGS"
COMM_SMS="${SMELT_COMM_SMS:-20}"
BUNDLE=.gpu-bundle
BUDGET=460
# Stage limits in seconds (the same on H100 and H200); they must fit the budget.
# `start` covers two launches of half of it each.
declare -A LIMIT=([start]=10 [device]=20 [kernels]=100 [gpu-check]=100 [cublas]=35 [train-cuda]=110 [train-cpu]=70 [compare]=15)
TOTAL=0
for s in "${!LIMIT[@]}"; do TOTAL=$((TOTAL + LIMIT[$s])); done
if ((TOTAL > BUDGET)); then
    echo "!! the stage limits add up to ${TOTAL}s, over the ${BUDGET}s budget" >&2
    exit 2
fi
declare -a ROWS=()
FAILED=0

row() { ROWS+=("$(printf '%-10s %-5s %s' "$1" "$2" "$3")"); }

finish() {
    echo
    echo "smelt gpu-check on ${DEVICE_LINE:-no GPU} (target ${TARGET:-none}, $COMM_SMS comm SMs; bundle ${BUNDLE_COMMIT:-?}; logs: $LOGS)"
    printf '%s\n' "${ROWS[@]}" | tee "$LOGS/table.txt"
    exit $FAILED
}

# run NAME CMD...: runs CMD under LIMIT[NAME] (cut to what is left of the budget),
# logging to $LOGS/NAME.log; on failure prints the log's tail and records FAIL.
DEADLINE=$((SECONDS + BUDGET))
run() {
    local name=$1 limit=${LIMIT[$1]}
    shift
    local left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s): $*" | tee "$LOGS/$name.log"
    if ((limit < 5)); then
        echo "!! $name FAILED: no time left in the budget" | tee -a "$LOGS/$name.log" >&2
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

# The bundle: built here only when it is missing (never on a machine without cargo).
if [ ! -f "$BUNDLE/MANIFEST" ]; then
    if ! command -v cargo >/dev/null; then
        echo "!! no $BUNDLE/ and no cargo: build the bundle with scripts/gpu-bundle.sh on a machine with Rust, and carry it here" >&2
        exit 2
    fi
    echo "gpu-check: no $BUNDLE/, building it with cargo (outside the time budget)"
    bash scripts/gpu-bundle.sh >"$LOGS/bundle.log" 2>&1 || {
        tail -n 30 "$LOGS/bundle.log" >&2
        echo "!! scripts/gpu-bundle.sh failed (see $LOGS/bundle.log)" >&2
        exit 1
    }
fi
SMELT="$BUNDLE/bin/smelt"
KERNELS="$BUNDLE/bin/gpu_kernels"
BUNDLE_COMMIT=$(awk '/^commit /{print substr($2, 1, 12)}' "$BUNDLE/MANIFEST")
missing=$(awk '/^file /{print $2}' "$BUNDLE/MANIFEST" | while read -r f; do
    [ -f "$BUNDLE/$f" ] || echo "$f"
done)
if [ -n "$missing" ]; then
    row bundle FAIL "files of the manifest are missing: $missing"
    FAILED=1
    finish
fi
cp "$BUNDLE/MANIFEST" "$LOGS/MANIFEST"
row bundle PASS "$BUNDLE_COMMIT, $(awk '/^size /{print $2, $3}' "$BUNDLE/MANIFEST")"
echo "gpu-check: bundle $BUNDLE_COMMIT; logs in $LOGS; stage limits ${TOTAL}s of ${BUDGET}s"

# Both binaries start here (whatever the machine).
HALF_START=$((LIMIT[start] / 2))
if timeout "$HALF_START" "$SMELT" --version >"$LOGS/start.log" 2>&1 &&
    timeout "$HALF_START" "$KERNELS" --list >>"$LOGS/start.log" 2>&1; then
    row start PASS "smelt and gpu_kernels run ($(grep -c ': test$' "$LOGS/start.log") kernel tests listed)"
else
    row start FAIL "see $LOGS/start.log"
    FAILED=1
    finish
fi

# 1. The device (and the cross-stream probe that runs when streams are made).
rc=0
timeout "${LIMIT[device]}" "$SMELT" gpu-check --info --comm-sms "$COMM_SMS" >"$LOGS/device.log" 2>&1 || rc=$?
if ((DRY_RUN)); then
    if ((rc == 2)) && grep -q "no CUDA driver found" "$LOGS/device.log"; then
        row device PASS "dry run: smelt gpu-check reports 'no CUDA driver found' (exit 2)"
    elif ((rc == 0)); then
        row device INFO "dry run on a machine with a GPU: $(grep -m1 '^device ' "$LOGS/device.log")"
    else
        row device FAIL "dry run: expected 'no CUDA driver found' with exit 2, got exit $rc: $(tail -n1 "$LOGS/device.log")"
        FAILED=1
    fi
    finish
fi
if ((rc != 0)); then
    row device FAIL "$(tail -n1 "$LOGS/device.log")"
    FAILED=1
    finish
fi
DEVICE_LINE=$(grep -m1 '^device ' "$LOGS/device.log" | cut -d' ' -f2-)
GPU_NAME=$(grep -m1 "^name " "$LOGS/device.log" | cut -d" " -f2-)
GPU_SMS=$(value sms "$LOGS/device.log")
case "$(grep -m1 '^name ' "$LOGS/device.log")" in
*H200*) TARGET=h200 ;;
*H100*) TARGET=h100 ;;
*H800*) TARGET=h800 ;;
*)
    row device FAIL "not a Hopper GPU smelt targets: $DEVICE_LINE"
    FAILED=1
    finish
    ;;
esac
TARGET="${SMELT_GPU_TARGET:-$TARGET}"
if [[ "$GPU_SMS" != 132 ]]; then
    row device FAIL "$GPU_NAME has $GPU_SMS SMs; the $TARGET target has 132"
    FAILED=1
    finish
fi
row device PASS "$DEVICE_LINE -> --target $TARGET; $(grep -m1 '^streams ' "$LOGS/device.log")"
if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>>"$LOGS/device.log"; then
    row torch FAIL "python3 with a CUDA-enabled torch is required (see $LOGS/device.log)"
    FAILED=1
fi

# 2. Every kernel family on the GPU against the interpreter.
if run kernels env SMELT_GPU_TEST_DEVICE=cuda "$KERNELS" --test-threads 4; then
    row kernels PASS "$(grep -m1 '^test result' "$LOGS/kernels.log")"
else
    row kernels FAIL "see $LOGS/kernels.log"
fi

# 3. smelt's own measurements (the product is verified before it is timed).
G="$LOGS/gpu-check.log"
if run gpu-check "$SMELT" gpu-check --target "$TARGET" --comm-sms "$COMM_SMS" --size 4096 --repeats 30; then
    row gpu-check PASS "$(grep -m1 '^verified' "$G"); $(grep -m1 '^partition' "$G")"
else
    row gpu-check FAIL "see $G"
fi
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
if run cublas python3 "$LOGS/cublas.py"; then
    TORCH_MS=$(value torch_ms "$LOGS/cublas.log")
    if [[ -n "$SMELT_MS" && -n "$TORCH_MS" ]]; then
        RATIO=$(python3 -c "print(f'{$SMELT_MS / $TORCH_MS:.2f}')")
        row matmul INFO "bf16 4096^3: smelt ${SMELT_MS} ms ($(value matmul_tflops "$G") TFLOP/s), cuBLAS ${TORCH_MS} ms ($(value torch_tflops "$LOGS/cublas.log") TFLOP/s), smelt/cuBLAS time ${RATIO}x"
    else
        row matmul FAIL "no verified smelt matmul time (gpu-check failed?)"
        FAILED=1
    fi
else
    row cublas FAIL "see $LOGS/cublas.log"
fi
for key in occupancy slowdown smid overlap; do
    if grep -q "^$key" "$G"; then
        row "$key" INFO "$(grep -m1 "^$key" "$G")"
    fi
done

# 5. Training: 20 steps on cuda and on cpu from the same seed, then losses and
# parameters compared.
train_on() {
    rm -rf "$LOGS/ckpt-$1"
    run "train-$1" "$SMELT" train "$BUNDLE/examples/gpt.smelt" --data "$BUNDLE/examples/data/genesis.txt" \
        --steps 20 --batch 4 --seed 1 --log "$LOGS/train-$1.jsonl" --checkpoint "$LOGS/ckpt-$1" \
        --device "$1" --target "$TARGET" --comm-sms "$COMM_SMS"
}
rm -f "$LOGS"/train-*.jsonl
# cuda includes the driver JIT-compiling every kernel of the step on the first run.
if train_on cuda && train_on cpu; then
    cat >"$LOGS/compare.py" <<'PY'
import json, sys
import numpy as np
from safetensors.numpy import load_file
logs = sys.argv[1]
cuda, cpu = ([json.loads(l)["loss"] for l in open(f"{logs}/train-{d}.jsonl")] for d in ("cuda", "cpu"))
assert len(cuda) == len(cpu) == 20, f"{len(cuda)} cuda and {len(cpu)} cpu steps, not 20"
loss_gap = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(cuda, cpu))
# Parameters: AdamW moves each by at most lr per step, so after 20 steps at lr 1e-3 a
# gradient bug shows as gaps of order 1e-2; f32 rounding differences stay far below.
a = load_file(f"{logs}/ckpt-cuda/checkpoint.safetensors")
b = load_file(f"{logs}/ckpt-cpu/checkpoint.safetensors")
assert a.keys() == b.keys(), "the checkpoints hold different tensors"
worst = max((float(np.max(np.abs(a[k].astype(np.float64) - b[k]))), k) for k in a if a[k].size)
print(f"losses {cpu[0]:.4f} -> {cpu[-1]:.4f} (cpu), {cuda[0]:.4f} -> {cuda[-1]:.4f} (cuda); "
      f"worst loss gap {loss_gap:.2e}; {len(a)} tensors, worst gap {worst[0]:.2e} ({worst[1]})")
assert loss_gap < 1e-3, "cuda and cpu losses differ by more than 1e-3 (relative)"
assert worst[0] < 2e-3, f"{worst[1]} differs by {worst[0]:.2e} after 20 steps (limit 2e-3)"
PY
    if run compare python3 "$LOGS/compare.py" "$LOGS"; then
        row train PASS "$(tail -n1 "$LOGS/compare.log")"
    else
        row train FAIL "$(tail -n1 "$LOGS/compare.log")"
    fi
else
    row train FAIL "see $LOGS/train-cuda.log, $LOGS/train-cpu.log"
fi

# 6. NCCL at world size 1: smelt has no collective engine yet (the distributed-training
# issue), so there is nothing of smelt's to run; said, not hidden.
row nccl SKIP "smelt has no NCCL engine yet; nothing to check at world size 1"

finish

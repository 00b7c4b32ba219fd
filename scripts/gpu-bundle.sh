#!/usr/bin/env bash
# Builds, on this (CPU) machine, everything scripts/gpu-check.sh runs on a GPU machine,
# into .gpu-bundle/ (git-ignored), so the check needs no Rust toolchain and no network
# there:
#   bin/smelt          the CLI, release, stripped
#   bin/gpu_kernels    runtime/tests/gpu_kernels.rs, release, stripped
#   examples/          the model and data the training step of the check uses
#   MANIFEST           commit, build time, toolchain, sizes, the newest glibc symbol used
# The binaries link only the C library dynamically; the CUDA driver is loaded at run
# time (cudarc's dynamic loading), so nothing of this machine's paths is needed there.
# The bundle must stay under 40 MiB (the device machine takes 64 MiB of files in all).
#
#   scripts/gpu-bundle.sh            build and assemble
# Then, on the GPU machine, with .gpu-bundle carried beside the checkout:
#   scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu-bundle
LIMIT_MIB=40

command -v cargo >/dev/null || { echo "gpu-bundle: cargo is needed to build the bundle" >&2; exit 1; }
command -v python3 >/dev/null || { echo "gpu-bundle: python3 is needed to read cargo's JSON" >&2; exit 1; }

cargo build --release --bin smelt
# The test binary's path comes from cargo's own JSON messages (its name carries a hash).
KERNELS=$(cargo test --release -p smelt-runtime --test gpu_kernels --no-run --message-format=json |
    python3 -c '
import json, sys
paths = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu_kernels"
         and m.get("executable")]
if len(paths) != 1:
    sys.exit(f"expected one gpu_kernels test binary, cargo reported {paths}")
print(paths[0])')
SMELT="${CARGO_TARGET_DIR:-target}/release/smelt"

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/examples/data"
cp "$SMELT" "$BUNDLE/bin/smelt"
cp "$KERNELS" "$BUNDLE/bin/gpu_kernels"
strip "$BUNDLE/bin/smelt" "$BUNDLE/bin/gpu_kernels"
cp examples/gpt.smelt "$BUNDLE/examples/"
cp examples/data/genesis.txt "$BUNDLE/examples/data/"

# Only libc, libm, libgcc_s and the loader may be linked: anything else would have to
# exist on the GPU machine too.
for b in "$BUNDLE"/bin/*; do
    extra=$(ldd "$b" | awk '{print $1}' | grep -Ev '^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|/lib64/ld-linux-x86-64\.so|libdl\.so|libpthread\.so|librt\.so)' || true)
    if [ -n "$extra" ]; then
        echo "gpu-bundle: $b links libraries a bare GPU machine may lack: $extra" >&2
        exit 1
    fi
done
glibc=$(objdump -T "$BUNDLE"/bin/* | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)

{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!.gpu-bundle' || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "rustc $(rustc --version)"
    echo "needs $glibc or newer, and the CUDA driver (loaded at run time)"
    (cd "$BUNDLE" && find . -type f ! -name MANIFEST | sort | while read -r f; do
        echo "file $f $(stat -c %s "$f")"
    done)
} >"$BUNDLE/MANIFEST"

bytes=$(du -sb "$BUNDLE" | cut -f1)
mib=$(python3 -c "print(f'{$bytes / 2**20:.1f}')")
echo "size ${mib} MiB" >>"$BUNDLE/MANIFEST"
cat "$BUNDLE/MANIFEST"
if ((bytes > LIMIT_MIB * 1024 * 1024)); then
    echo "gpu-bundle: ${mib} MiB is over the ${LIMIT_MIB} MiB limit" >&2
    exit 1
fi
echo "gpu-bundle: $BUNDLE is ready (${mib} MiB); carry it to the GPU machine and run scripts/gpu-check.sh"

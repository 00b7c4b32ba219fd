#!/usr/bin/env bash
# Fetches the ONNX backend test data (the `node` suite and the small whole-model suites)
# from the onnx==1.22.0 wheel into DIR (default: target/onnx-testdata), for the
# conformance test `cargo test -p smelt-frontend --test onnx_conformance`.
# Idempotent: does nothing when DIR already holds the data.
set -euo pipefail

version=1.22.0
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-${SMELT_ONNX_TESTDATA:-$root/target/onnx-testdata}}"

if [ -f "$dest/.onnx-$version" ]; then
    echo "ONNX $version test data already in $dest"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The data files are the same in every platform's wheel; pin one so that the local
# Python version does not matter.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 \
    "onnx==$version" -d "$work"
wheel="$(ls "$work"/onnx-"$version"-*.whl)"
mkdir -p "$dest"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            info.filename = info.filename[len(prefix):]
            z.extract(info, dest)
PY
touch "$dest/.onnx-$version"
echo "ONNX $version test data extracted to $dest"

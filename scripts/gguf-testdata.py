"""Test data for smelt's GGUF reader, made by the `gguf` Python package (llama.cpp's own
writer and reference dequantiser), so the reader is checked against code that is not
smelt's.

    python3 scripts/gguf-testdata.py OUT_DIR

writes OUT_DIR/blocks.gguf, a file with one tensor per ggml type smelt reads (random
blocks, with finite random scales) and metadata of every value type, and beside it
OUT_DIR/expected.json (the metadata and tensor shapes) and OUT_DIR/<TYPE>.f32 (each
tensor as `gguf.quants.dequantize` gives it, little-endian f32). frontend/tests/gguf.rs
reads them; .ci/run makes them.
"""

import json
import pathlib
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(20261206)

# Byte offsets of each block's float16 scale fields (d, and m or dmin), and of Q8_K's
# float32 scale: random bytes there could be NaN or infinity.
HALF_FIELDS = {
    Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2],
    Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}
ROWS, ROW = 3, 512  # two 256-blocks or sixteen 32-blocks per row

writer = gguf.GGUFWriter(str(out / "blocks.gguf"), arch="llama")
metadata = {
    "test.u8": ("uint8", 200), "test.i8": ("int8", -100), "test.u16": ("uint16", 60000),
    "test.i16": ("int16", -30000), "test.u32": ("uint32", 4000000000),
    "test.i32": ("int32", -2000000000), "test.f32": ("float32", 0.25),
    "test.bool": ("bool", True), "test.str": ("string", "héllo ☃"),
    "test.u64": ("uint64", 2**60), "test.i64": ("int64", -(2**60)),
    "test.f64": ("float64", 1e-300),
}
for key, (kind, value) in metadata.items():
    getattr(writer, f"add_{kind}")(key, value)
writer.add_array("test.tokens", ["a", "bc", "<|im_end|>"])
writer.add_array("test.scores", [0.5, -1.0, 2.0])

shapes = {}
for qtype in [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1,
              Q.Q8_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
    name = qtype.name
    if qtype == Q.F32:
        values = rng.standard_normal((ROWS, ROW)).astype(np.float32)
        writer.add_tensor(name, values)
        expected = values
    elif qtype == Q.F16:
        values = rng.standard_normal((ROWS, ROW)).astype(np.float16)
        writer.add_tensor(name, values)
        expected = values.astype(np.float32)
    else:
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, (ROWS, ROW // block_elems * block_bytes), dtype=np.uint8)
        if qtype == Q.BF16:
            # Finite values only: keep the exponent below all-ones.
            raw[:, 1::2] &= 0xBF
        blocks = raw.reshape(ROWS, -1, block_bytes)
        for at in HALF_FIELDS.get(qtype, []):
            scales = (rng.standard_normal(blocks.shape[:2]) * 0.1).astype(np.float16)
            blocks[:, :, at:at + 2] = scales.view(np.uint8).reshape(*blocks.shape[:2], 2)
        if qtype == Q.Q8_K:
            scales = (rng.standard_normal(blocks.shape[:2]) * 0.1).astype(np.float32)
            blocks[:, :, 0:4] = scales.view(np.uint8).reshape(*blocks.shape[:2], 4)
        writer.add_tensor(name, raw, raw_dtype=qtype)
        if qtype == Q.Q8_K:
            # gguf.quants has no Q8_K (llama.cpp uses it for activations, not files):
            # d (f32) times 256 int8 values, then 16 int16 sums.
            d = blocks[:, :, 0:4].copy().view(np.float32)
            q = blocks[:, :, 4:260].view(np.int8).astype(np.float32)
            expected = (d * q).reshape(ROWS, ROW)
        else:
            expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
    assert expected.shape == (ROWS, ROW), (name, expected.shape)
    shapes[name] = list(expected.shape)
    (out / f"{name}.f32").write_bytes(expected.astype("<f4").tobytes())

writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()

# What the reader must find (numbers as JSON numbers; f32 values exactly as stored).
expected = {key: value for key, (_, value) in metadata.items()}
expected["test.tokens"] = ["a", "bc", "<|im_end|>"]
expected["test.scores"] = [0.5, -1.0, 2.0]
expected["general.architecture"] = "llama"
(out / "expected.json").write_text(json.dumps({"metadata": expected, "shapes": shapes}, indent=1))
print(f"gguf-testdata: {len(shapes)} tensors in {out / 'blocks.gguf'}")

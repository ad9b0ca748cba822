#!/usr/bin/env python3
"""Writes one tiny random-weight GGUF per architecture that has no real test model here
(qwen2, qwen3, phi3, gemma, gemma2), for checking the engine's forward passes against llama.cpp.

Tensor names, shapes and metadata keys are those llama.cpp reads for each architecture
(src/models/<arch>.cpp `load_arch_hparams` / `load_arch_tensors`, names from gguf-py's
TENSOR_NAMES). Each file exercises its architecture's particular features:

  qwen2   separate Q/K/V with biases, NeoX RoPE (base 1e6), explicit output.weight with an
          output.bias; F16 FFN and output matrices (the F16 matmul path); an attention.scale
          key, which llama.cpp ignores for qwen2
  qwen3   QK-norm, head size 32 with n_embd 64 (query width != n_embd), tied embeddings
  phi3    fused attn_qkv and fused ffn_up ([gate | up], SwiGLU on the halves), LongRoPE factors
          (long ones: the 256 context exceeds original_context_length 128; llama.cpp rounds
          every context up to a multiple of 256, so any context up to 256 does) and
          rope.scaling.attn_factor; a sliding_window key that llama.cpp ignores for phi3;
          explicit output.weight
  gemma   embeddings scaled by sqrt(n_embd), GELU-gated FFN, norm weights stored as 1 + w
          (the Gemma converter adds the 1; llama.cpp and the engine use them as stored),
          multi-query attention (one KV head), head size 32, tied F16 embeddings
  gemma2  attention and final logit soft-capping (small caps, so they bite), sliding window of
          16 on every other layer (pattern 2) over an 80-token input, separate RoPE base for
          sliding-window layers, post-attention and post-FFN norms, tied embeddings

Every file carries a minimal SentencePiece ("llama") vocabulary: <unk>, <s>, </s>, the 256
byte tokens, a few words and <|endoftext|> (289 tokens). Weights come from numpy's
default_rng with a fixed seed per architecture, so the files are reproducible.

Usage: make_tiny_arch.py OUT_DIR [LLAMA_LOGITS]
(gguf-py is taken from $GGUF_PY, by default the vendored llama.cpp's under /work/ext.)

With LLAMA_LOGITS (scripts/reference/llama_logits.c, built against libllama), also writes
OUT_DIR/<arch>.json: a seeded token sequence (BOS and 79 random ids) and llama.cpp's logits at
every position, on the CPU with one thread and a 256-token context: evaluated as one batch with
flash attention off ("logits"), and in chunks of 64, 1 and 15 tokens with flash attention off
("logits_chunked") and on ("logits_chunked_flash").
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

GGUF_PY = os.environ.get("GGUF_PY", "/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py")
sys.path.insert(0, GGUF_PY)
import gguf  # noqa: E402
from gguf import MODEL_TENSOR as T  # noqa: E402

N_EMBD = 64
N_FF = 128
N_CTX = 256
WORDS = [
    "▁the", "▁a", "▁of", "▁and", "▁to", "▁in", "▁is", "▁it", "▁that", "▁was",
    "▁for", "▁on", "▁with", "▁as", "▁at", "▁by", "▁this", "▁from", "▁be", "▁or",
    "▁not", "▁but", "▁are", "▁his", "▁they", "▁have", "▁one", "▁all", "▁an",
]


def name(t, bid=None, suffix="weight"):
    base = gguf.TENSOR_NAMES[t]
    return (base.format(bid=bid) if bid is not None else base) + "." + suffix


def add_vocab(w):
    # <|endoftext|>: llama.cpp's vocabulary loader looks it up in any model whose general.name
    # says phi3 (llama_vocab::impl::load), as real Phi-3 vocabularies have it.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS
    tokens += ["<|endoftext|>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(WORDS)
    types += [gguf.TokenType.CONTROL]
    scores = [0.0] * (3 + 256) + [-float(i + 1) for i in range(len(WORDS))] + [0.0]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    return len(tokens)


class Builder:
    """Random tensors with scales that keep activations and logits in a lively range."""

    def __init__(self, arch, seed, n_vocab):
        self.rng = np.random.default_rng(seed)
        self.arch = arch
        self.n_vocab = n_vocab
        self.tensors = []

    def mat(self, t, n_in, n_out, bid=None, dtype=np.float32, gain=1.0):
        # numpy shape (rows, cols) = GGUF dims [n_in, n_out]: n_out rows of n_in values.
        a = self.rng.standard_normal((n_out, n_in)) * (gain / np.sqrt(n_in))
        self.tensors.append((name(t, bid), a.astype(dtype)))

    def vec(self, t, n, bid=None, suffix="weight", mean=1.0, std=0.1):
        a = mean + std * self.rng.standard_normal(n)
        self.tensors.append((name(t, bid, suffix), a.astype(np.float32)))

    def embd(self, dtype=np.float32):
        a = self.rng.standard_normal((self.n_vocab, N_EMBD)) * 0.4
        self.tensors.append((name(T.TOKEN_EMBD), a.astype(dtype)))


def common_kv(w, n_layer, n_head, n_head_kv, rms_eps=1e-6):
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(rms_eps)


def qwen2(w, b):
    n_layer, n_head, n_head_kv = 2, 4, 2
    hd = N_EMBD // n_head
    common_kv(w, n_layer, n_head, n_head_kv)
    w.add_rope_freq_base(1e6)
    # Read only by llama.cpp's Granite family: qwen2 keeps 1/sqrt(head_dim) whatever it says.
    w.add_float32(gguf.Keys.Attention.SCALE.format(arch=w.arch), 0.5)
    b.embd()
    b.vec(T.OUTPUT_NORM, N_EMBD)
    b.mat(T.OUTPUT, N_EMBD, b.n_vocab, dtype=np.float16, gain=3.0)
    b.vec(T.OUTPUT, b.n_vocab, suffix="bias", mean=0.0, std=0.5)
    for i in range(n_layer):
        b.vec(T.ATTN_NORM, N_EMBD, i)
        b.mat(T.ATTN_Q, N_EMBD, n_head * hd, i, gain=2.0)
        b.vec(T.ATTN_Q, n_head * hd, i, "bias", mean=0.0, std=0.5)
        b.mat(T.ATTN_K, N_EMBD, n_head_kv * hd, i, gain=2.0)
        b.vec(T.ATTN_K, n_head_kv * hd, i, "bias", mean=0.0, std=0.5)
        b.mat(T.ATTN_V, N_EMBD, n_head_kv * hd, i)
        b.vec(T.ATTN_V, n_head_kv * hd, i, "bias", mean=0.0, std=0.5)
        b.mat(T.ATTN_OUT, n_head * hd, N_EMBD, i)
        b.vec(T.FFN_NORM, N_EMBD, i)
        b.mat(T.FFN_GATE, N_EMBD, N_FF, i, dtype=np.float16)
        b.mat(T.FFN_UP, N_EMBD, N_FF, i, dtype=np.float16)
        b.mat(T.FFN_DOWN, N_FF, N_EMBD, i, dtype=np.float16)


def qwen3(w, b):
    n_layer, n_head, n_head_kv, hd = 2, 4, 2, 32
    common_kv(w, n_layer, n_head, n_head_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(1e6)
    b.embd()
    b.vec(T.OUTPUT_NORM, N_EMBD)
    for i in range(n_layer):
        b.vec(T.ATTN_NORM, N_EMBD, i)
        b.mat(T.ATTN_Q, N_EMBD, n_head * hd, i)
        b.mat(T.ATTN_K, N_EMBD, n_head_kv * hd, i)
        b.mat(T.ATTN_V, N_EMBD, n_head_kv * hd, i)
        b.vec(T.ATTN_Q_NORM, hd, i, std=0.5)
        b.vec(T.ATTN_K_NORM, hd, i, std=0.5)
        b.mat(T.ATTN_OUT, n_head * hd, N_EMBD, i)
        b.vec(T.FFN_NORM, N_EMBD, i)
        b.mat(T.FFN_GATE, N_EMBD, N_FF, i)
        b.mat(T.FFN_UP, N_EMBD, N_FF, i)
        b.mat(T.FFN_DOWN, N_FF, N_EMBD, i)


def phi3(w, b):
    n_layer, n_head, n_head_kv = 2, 4, 2
    hd = N_EMBD // n_head
    common_kv(w, n_layer, n_head, n_head_kv, rms_eps=1e-5)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_rope_scaling_attn_factors(1.19)
    w.add_rope_scaling_orig_ctx_len(128)
    w.add_sliding_window(64)  # llama_model_phi3::load_arch_hparams disables phi3's SWA
    b.embd()
    b.vec(T.OUTPUT_NORM, N_EMBD)
    b.mat(T.OUTPUT, N_EMBD, b.n_vocab, gain=3.0)
    # LongRoPE frequency divisors, n_rot/2 each: long ones clearly different from short.
    b.tensors.append((name(T.ROPE_FACTORS_LONG), np.linspace(1.0, 12.0, hd // 2).astype(np.float32)))
    b.tensors.append((name(T.ROPE_FACTORS_SHORT), np.linspace(1.0, 1.5, hd // 2).astype(np.float32)))
    for i in range(n_layer):
        b.vec(T.ATTN_NORM, N_EMBD, i)
        b.mat(T.ATTN_QKV, N_EMBD, (n_head + 2 * n_head_kv) * hd, i, gain=2.0)
        b.mat(T.ATTN_OUT, n_head * hd, N_EMBD, i)
        b.vec(T.FFN_NORM, N_EMBD, i)
        b.mat(T.FFN_UP, N_EMBD, 2 * N_FF, i)  # [gate | up]
        b.mat(T.FFN_DOWN, N_FF, N_EMBD, i)


def gemma(w, b):
    n_layer, n_head, n_head_kv, hd = 2, 4, 1, 32
    common_kv(w, n_layer, n_head, n_head_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    b.embd(dtype=np.float16)  # tied: also the output matrix
    # Norm weights as the converter stores them: 1 + w.
    b.vec(T.OUTPUT_NORM, N_EMBD, mean=1.0, std=0.2)
    for i in range(n_layer):
        b.vec(T.ATTN_NORM, N_EMBD, i, mean=1.0, std=0.2)
        b.mat(T.ATTN_Q, N_EMBD, n_head * hd, i, gain=2.0)
        b.mat(T.ATTN_K, N_EMBD, n_head_kv * hd, i, gain=2.0)
        b.mat(T.ATTN_V, N_EMBD, n_head_kv * hd, i)
        b.mat(T.ATTN_OUT, n_head * hd, N_EMBD, i)
        b.vec(T.FFN_NORM, N_EMBD, i, mean=1.0, std=0.2)
        b.mat(T.FFN_GATE, N_EMBD, N_FF, i, gain=2.0)
        b.mat(T.FFN_UP, N_EMBD, N_FF, i)
        b.mat(T.FFN_DOWN, N_FF, N_EMBD, i)


def gemma2(w, b):
    n_layer, n_head, n_head_kv = 4, 4, 2
    hd = N_EMBD // n_head
    common_kv(w, n_layer, n_head, n_head_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(100000.0)
    w.add_rope_freq_base_swa(10000.0)
    w.add_sliding_window(16)
    w.add_attn_logit_softcapping(2.0)
    w.add_final_logit_softcapping(3.0)
    b.embd()
    b.vec(T.OUTPUT_NORM, N_EMBD, mean=1.0, std=0.2)
    for i in range(n_layer):
        b.vec(T.ATTN_NORM, N_EMBD, i, mean=1.0, std=0.2)
        b.mat(T.ATTN_Q, N_EMBD, n_head * hd, i, gain=3.0)
        b.mat(T.ATTN_K, N_EMBD, n_head_kv * hd, i, gain=3.0)
        b.mat(T.ATTN_V, N_EMBD, n_head_kv * hd, i)
        b.mat(T.ATTN_OUT, n_head * hd, N_EMBD, i)
        b.vec(T.ATTN_POST_NORM, N_EMBD, i, mean=1.0, std=0.2)
        b.vec(T.FFN_NORM, N_EMBD, i, mean=1.0, std=0.2)
        b.mat(T.FFN_GATE, N_EMBD, N_FF, i, gain=2.0)
        b.mat(T.FFN_UP, N_EMBD, N_FF, i)
        b.mat(T.FFN_DOWN, N_FF, N_EMBD, i)
        b.vec(T.FFN_POST_NORM, N_EMBD, i, mean=1.0, std=0.2)


N_TOKENS = 80
# A prefill of 64 (llama.cpp's tiled flash-attention kernel starts at 64 queries), one decoded
# token (the one-row matrix-vector kernels), then the rest on top of the cache.
CHUNKS = [64, 1, 15]


def reference(binary, path, tokens, flash, chunks):
    spec = ",".join(map(str, chunks)) if chunks else "0"
    cmd = [binary, str(path), str(N_CTX), "1" if flash else "0", "1", spec] + [str(t) for t in tokens]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    assert r["tokens"] == tokens and len(r["logits"]) == len(tokens)
    return r


def f32_list(row):
    # The shortest text that reads back as the same f32 (the values are f32 from llama.cpp).
    return "[" + ", ".join(np.format_float_positional(np.float32(v), unique=True, trim="-")
                           for v in row) + "]"


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


ARCHS = {"qwen2": (qwen2, 1002), "qwen3": (qwen3, 1003), "phi3": (phi3, 1004),
         "gemma": (gemma, 1005), "gemma2": (gemma2, 1006)}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    binary = sys.argv[2] if len(sys.argv) == 3 else None
    out.mkdir(parents=True, exist_ok=True)
    for arch, (build, seed) in ARCHS.items():
        path = out / f"{arch}.gguf"
        w = gguf.GGUFWriter(str(path), arch)
        w.add_name(f"tiny random {arch} (wasm-chord test fixture)")
        n_vocab = add_vocab(w)
        b = Builder(arch, seed, n_vocab)
        build(w, b)
        for tname, data in b.tensors:
            w.add_tensor(tname, data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        print(f"{path}: {len(b.tensors)} tensors, {path.stat().st_size} bytes")
        if binary is None:
            continue
        rng = np.random.default_rng(seed + 100)
        tokens = [1] + [int(t) for t in rng.integers(3, n_vocab, N_TOKENS - 1)]
        batch = reference(binary, path, tokens, False, None)
        chunked = reference(binary, path, tokens, False, CHUNKS)
        chunked_fa = reference(binary, path, tokens, True, CHUNKS)
        fixture = {
            "arch": arch,
            "n_vocab": batch["n_vocab"],
            "n_ctx": batch["n_ctx"],
            "n_threads": 1,
            "system_info": batch["system_info"],
            "tokens": tokens,
            "chunks": CHUNKS,
            "logits": batch["logits"],
            "logits_chunked": chunked["logits"],
            "logits_chunked_flash": chunked_fa["logits"],
        }
        jpath = out / f"{arch}.json"
        keys = list(fixture)
        with open(jpath, "w") as f:
            f.write("{\n")
            for k in keys:
                if k.startswith("logits"):
                    rows = ",\n".join("  " + f32_list(r) for r in fixture[k])
                    f.write(f' "{k}": [\n{rows}\n ]')
                else:
                    f.write(f" {json.dumps(k)}: {json.dumps(fixture[k])}")
                f.write(",\n" if k != keys[-1] else "\n")
            f.write("}\n")
        print(f"{jpath}: {len(tokens)} tokens; max |logit| change: chunked vs batch "
              f"{max_diff(batch['logits'], chunked['logits']):.3g}, flash on vs off (chunked) "
              f"{max_diff(chunked['logits'], chunked_fa['logits']):.3g}")

if __name__ == "__main__":
    main()

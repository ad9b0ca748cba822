//! Tests on small synthetic models: hyperparameter checks, the forward passes against a plain f64
//! re-implementation of the same equations, batching, the KV cache and context shift.
//! (Fidelity against llama.cpp is in tests/forward.rs on real models and tests/arch_reference.rs
//! on tiny models of the other architectures.)

use super::*;
use crate::gguf::{GgufWriter, Value};

/// Deterministic pseudo-random numbers in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Shape of a synthetic model.
#[derive(Clone, Copy)]
struct Cfg {
    arch: Arch,
    n_vocab: usize,
    d: usize,
    n_layer: usize,
    ff: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    window: usize,
    rope_base: f32,
}

const LLAMA: Cfg = Cfg {
    arch: Arch::Llama,
    n_vocab: 40,
    d: 64,
    n_layer: 2,
    ff: 96,
    n_head: 4,
    n_head_kv: 2,
    head_dim: 16,
    window: 0,
    rope_base: 500_000.0,
};

const GEMMA3: Cfg = Cfg {
    arch: Arch::Gemma3,
    n_vocab: 40,
    d: 64,
    n_layer: 7, // layers 0-4 and 6 local, 5 global
    ff: 96,
    n_head: 2,
    n_head_kv: 1,
    head_dim: 32,
    window: 4,
    rope_base: 1_000_000.0,
};

/// The small llama shape for another architecture (and Gemma 2's window of 4).
fn like_llama(arch: Arch) -> Cfg {
    let window = if arch == Arch::Gemma2 { 4 } else { 0 };
    Cfg {
        arch,
        window,
        ..LLAMA
    }
}

#[test]
fn qwen2_matches_reference() {
    check_against_reference(like_llama(Arch::Qwen2));
}

#[test]
fn qwen3_matches_reference() {
    check_against_reference(like_llama(Arch::Qwen3));
}

#[test]
fn phi3_matches_reference() {
    check_against_reference(Cfg {
        n_head_kv: 4,
        ..like_llama(Arch::Phi3)
    });
}

#[test]
fn gemma_matches_reference() {
    check_against_reference(like_llama(Arch::Gemma));
}

#[test]
fn gemma2_matches_reference() {
    check_against_reference(Cfg {
        n_layer: 3,
        ..like_llama(Arch::Gemma2)
    });
}

/// A small configuration of every architecture.
fn all_archs() -> Vec<Cfg> {
    let mut v = vec![LLAMA, GEMMA3];
    v.extend(
        [
            Arch::Qwen2,
            Arch::Qwen3,
            Arch::Phi3,
            Arch::Gemma,
            Arch::Gemma2,
        ]
        .map(like_llama),
    );
    v
}

/// Named f32 tensors of a synthetic model, as the reference reads them.
struct Tensors(Vec<(String, Vec<u64>, Vec<f32>)>);

impl Tensors {
    fn get(&self, name: &str) -> &[f32] {
        &self.0.iter().find(|t| t.0 == name).unwrap().2
    }
}

/// What each architecture's graph does differently, for the generator and the reference.
#[derive(Clone, Copy, Default)]
struct Features {
    neox: bool,
    qk_norm: bool,
    post_norms: bool,
    /// Gemma: embeddings × sqrt(d), GELU instead of SiLU.
    gemma: bool,
    bias: bool,
    /// Phi-3: fused attn_qkv and gate+up, LongRoPE factors.
    fused: bool,
    /// Soft-caps of attention and output logits.
    softcaps: Option<(f64, f64)>,
    /// Sliding-window layers: `il % period != period - 1`; local RoPE base.
    swa: Option<(usize, Option<f64>)>,
}

impl Features {
    fn of(arch: Arch) -> Features {
        let d = Features::default();
        match arch {
            Arch::Llama => d,
            Arch::Qwen2 => Features {
                neox: true,
                bias: true,
                ..d
            },
            Arch::Qwen3 => Features {
                neox: true,
                qk_norm: true,
                ..d
            },
            Arch::Phi3 => Features {
                neox: true,
                fused: true,
                ..d
            },
            Arch::Gemma => Features {
                neox: true,
                gemma: true,
                ..d
            },
            Arch::Gemma2 => Features {
                neox: true,
                gemma: true,
                post_norms: true,
                softcaps: Some((50.0, 30.0)),
                swa: Some((2, None)),
                ..d
            },
            Arch::Gemma3 => Features {
                neox: true,
                gemma: true,
                post_norms: true,
                qk_norm: true,
                swa: Some((6, Some(10_000.0))),
                ..d
            },
        }
    }
}

fn synth(c: Cfg, seed: u64) -> (Vec<u8>, Tensors) {
    let a = c.arch.name();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String(a.into()));
    w.kv(format!("{a}.context_length"), Value::U32(256));
    w.kv(format!("{a}.embedding_length"), Value::U32(c.d as u32));
    w.kv(format!("{a}.block_count"), Value::U32(c.n_layer as u32));
    w.kv(format!("{a}.feed_forward_length"), Value::U32(c.ff as u32));
    w.kv(
        format!("{a}.attention.head_count"),
        Value::U32(c.n_head as u32),
    );
    w.kv(
        format!("{a}.attention.head_count_kv"),
        Value::U32(c.n_head_kv as u32),
    );
    w.kv(
        format!("{a}.attention.key_length"),
        Value::U32(c.head_dim as u32),
    );
    w.kv(
        format!("{a}.attention.value_length"),
        Value::U32(c.head_dim as u32),
    );
    w.kv(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    w.kv(format!("{a}.vocab_size"), Value::U32(c.n_vocab as u32));
    w.kv(format!("{a}.rope.freq_base"), Value::F32(c.rope_base));
    if c.window > 0 {
        w.kv(
            format!("{a}.attention.sliding_window"),
            Value::U32(c.window as u32),
        );
    }
    let mut rng = Rng(seed);
    let mut tensors = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, scale: f32, offset: f32| {
        let n = dims.iter().product::<u64>() as usize;
        let data: Vec<f32> = rng.vec(n, scale).into_iter().map(|v| v + offset).collect();
        tensors.push((name, dims, data));
    };
    let (d, hd, ff) = (c.d as u64, c.head_dim as u64, c.ff as u64);
    let (qd, kd) = (c.n_head as u64 * hd, c.n_head_kv as u64 * hd);
    add(
        "token_embd.weight".into(),
        vec![d, c.n_vocab as u64],
        1.0,
        0.0,
    );
    add("output_norm.weight".into(), vec![d], 0.2, 1.0);
    add("output.weight".into(), vec![d, c.n_vocab as u64], 0.3, 0.0);
    let f = Features::of(c.arch);
    if f.fused {
        // Phi-3's LongRoPE factors (the short ones apply to a small context).
        add("rope_factors_short.weight".into(), vec![hd / 2], 0.5, 1.5);
        add("rope_factors_long.weight".into(), vec![hd / 2], 0.5, 3.0);
    }
    for il in 0..c.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let b = |s: &str| format!("blk.{il}.{s}.bias");
        add(n("attn_norm"), vec![d], 0.2, 1.0);
        if f.fused {
            add(n("attn_qkv"), vec![d, qd + 2 * kd], 0.3, 0.0);
        } else {
            add(n("attn_q"), vec![d, qd], 0.3, 0.0);
            add(n("attn_k"), vec![d, kd], 0.3, 0.0);
            add(n("attn_v"), vec![d, kd], 0.3, 0.0);
        }
        if f.bias {
            add(b("attn_q"), vec![qd], 0.5, 0.0);
            add(b("attn_k"), vec![kd], 0.5, 0.0);
            add(b("attn_v"), vec![kd], 0.5, 0.0);
        }
        add(n("attn_output"), vec![qd, d], 0.2, 0.0);
        add(n("ffn_norm"), vec![d], 0.2, 1.0);
        if f.fused {
            add(n("ffn_up"), vec![d, 2 * ff], 0.3, 0.0);
        } else {
            add(n("ffn_gate"), vec![d, ff], 0.3, 0.0);
            add(n("ffn_up"), vec![d, ff], 0.3, 0.0);
        }
        add(n("ffn_down"), vec![ff, d], 0.2, 0.0);
        if f.qk_norm {
            add(n("attn_q_norm"), vec![hd], 0.2, 1.0);
            add(n("attn_k_norm"), vec![hd], 0.2, 1.0);
        }
        if f.post_norms {
            add(n("post_attention_norm"), vec![d], 0.2, 1.0);
            add(n("post_ffw_norm"), vec![d], 0.2, 1.0);
        }
    }
    for (name, dims, data) in &tensors {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.tensor(name.clone(), dims, GgmlType::F32, bytes).unwrap();
    }
    (w.to_bytes(), Tensors(tensors))
}

fn load(bytes: Vec<u8>) -> Result<Arc<Model>> {
    let src: SharedSource = Arc::new(bytes);
    let gguf = Gguf::read(&*src)?;
    Model::load(src, gguf).map(Arc::new)
}

fn session(m: &Arc<Model>, n_ctx: usize) -> Session {
    m.new_session(SessionOptions {
        n_ctx,
        ..Default::default()
    })
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A plain f64 reference of the two architectures (no f16 or quantization rounding).

fn matvec(w: &[f32], x: &[f64], rows: usize) -> Vec<f64> {
    let k = x.len();
    (0..rows)
        .map(|r| (0..k).map(|c| f64::from(w[r * k + c]) * x[c]).sum())
        .collect()
}

fn rmsnorm(x: &[f64], w: &[f32]) -> Vec<f64> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|row| {
            let s = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + 1e-5).sqrt();
            row.iter().zip(w).map(move |(v, &wi)| v * s * f64::from(wi))
        })
        .collect()
}

fn rope(x: &mut [f64], hd: usize, pos: usize, base: f64, neox: bool, factors: Option<&[f64]>) {
    for head in x.chunks_mut(hd) {
        for i in 0..hd / 2 {
            let ff = factors.map_or(1.0, |f| f[i]);
            let theta = pos as f64 * base.powf(-2.0 * i as f64 / hd as f64) / ff;
            let (a, b) = if neox {
                (i, i + hd / 2)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * theta.cos() - x1 * theta.sin();
            head[b] = x0 * theta.sin() + x1 * theta.cos();
        }
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

fn softcap(x: f64, cap: f64) -> f64 {
    cap * (x / cap).tanh()
}

/// Logits after every token of `tokens`.
fn reference(c: Cfg, t: &Tensors, tokens: &[u32]) -> Vec<Vec<f64>> {
    let f = Features::of(c.arch);
    let (d, hd) = (c.d, c.head_dim);
    let (qd, kd) = (c.n_head * hd, c.n_head_kv * hd);
    let mut keys = vec![Vec::<Vec<f64>>::new(); c.n_layer];
    let mut vals = vec![Vec::<Vec<f64>>::new(); c.n_layer];
    let mut out = Vec::new();
    let factors: Option<Vec<f64>> = f.fused.then(|| {
        t.get("rope_factors_short.weight")
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    });
    for (pos, &tok) in tokens.iter().enumerate() {
        let emb = &t.get("token_embd.weight")[tok as usize * d..][..d];
        let mut x: Vec<f64> = emb.iter().map(|&v| f64::from(v)).collect();
        if f.gemma {
            x.iter_mut().for_each(|v| *v *= (d as f64).sqrt());
        }
        for il in 0..c.n_layer {
            let w = |s: &str| t.get(&format!("blk.{il}.{s}.weight"));
            let bias = |v: &mut Vec<f64>, s: &str| {
                if f.bias {
                    let b = t.get(&format!("blk.{il}.{s}.bias"));
                    v.iter_mut().zip(b).for_each(|(a, &b)| *a += f64::from(b));
                }
            };
            let local = c.window > 0 && f.swa.is_some_and(|(p, _)| il % p != p - 1);
            let base = match f.swa {
                Some((_, Some(b))) if local => b,
                _ => f64::from(c.rope_base),
            };
            let xn = rmsnorm(&x, w("attn_norm"));
            let (mut q, mut k, v) = if f.fused {
                let qkv = matvec(w("attn_qkv"), &xn, qd + 2 * kd);
                (
                    qkv[..qd].to_vec(),
                    qkv[qd..qd + kd].to_vec(),
                    qkv[qd + kd..].to_vec(),
                )
            } else {
                let (mut q, mut k, mut v) = (
                    matvec(w("attn_q"), &xn, qd),
                    matvec(w("attn_k"), &xn, kd),
                    matvec(w("attn_v"), &xn, kd),
                );
                bias(&mut q, "attn_q");
                bias(&mut k, "attn_k");
                bias(&mut v, "attn_v");
                (q, k, v)
            };
            if f.qk_norm {
                q = rmsnorm(&q, w("attn_q_norm"));
                k = rmsnorm(&k, w("attn_k_norm"));
            }
            rope(&mut q, hd, pos, base, f.neox, factors.as_deref());
            rope(&mut k, hd, pos, base, f.neox, factors.as_deref());
            keys[il].push(k);
            vals[il].push(v);
            let mut att = vec![0.0; qd];
            for h in 0..c.n_head {
                let g = h / (c.n_head / c.n_head_kv);
                let qh = &q[h * hd..(h + 1) * hd];
                let first = if local {
                    (pos + 1).saturating_sub(c.window)
                } else {
                    0
                };
                let scores: Vec<f64> = (first..=pos)
                    .map(|j| {
                        let kh = &keys[il][j][g * hd..(g + 1) * hd];
                        let dot: f64 = qh.iter().zip(kh).map(|(a, b)| a * b).sum();
                        match f.softcaps {
                            // Gemma 2 scales q first, then caps
                            Some((cap, _)) => softcap(dot / (hd as f64).sqrt(), cap),
                            None => dot / (hd as f64).sqrt(),
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, p) in (first..=pos).zip(&e) {
                    for dd in 0..hd {
                        att[h * hd + dd] += p / sum * vals[il][j][g * hd + dd];
                    }
                }
            }
            let mut o = matvec(w("attn_output"), &att, d);
            if f.post_norms {
                o = rmsnorm(&o, w("post_attention_norm"));
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rmsnorm(&x, w("ffn_norm"));
            let (g, u) = if f.fused {
                let gu = matvec(w("ffn_up"), &xn, 2 * c.ff);
                (gu[..c.ff].to_vec(), gu[c.ff..].to_vec())
            } else {
                (
                    matvec(w("ffn_gate"), &xn, c.ff),
                    matvec(w("ffn_up"), &xn, c.ff),
                )
            };
            let h: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| {
                    if f.gemma {
                        gelu(g) * u
                    } else {
                        g / (1.0 + (-g).exp()) * u
                    }
                })
                .collect();
            let mut y = matvec(w("ffn_down"), &h, d);
            if f.post_norms {
                y = rmsnorm(&y, w("post_ffw_norm"));
            }
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        let xn = rmsnorm(&x, t.get("output_norm.weight"));
        let mut logits = matvec(t.get("output.weight"), &xn, c.n_vocab);
        if let Some((_, cap)) = f.softcaps {
            logits.iter_mut().for_each(|v| *v = softcap(*v, cap));
        }
        out.push(logits);
    }
    out
}

fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| ((r.next() + 1.0) / 2.0 * n_vocab as f32) as u32 % n_vocab as u32)
        .collect()
}

/// Our logits after each token vs the f64 reference: the differences are only f16 rounding of
/// K, V, q and the attention weights (and GELU's f16 table), so they stay small.
fn check_against_reference(c: Cfg) {
    let (bytes, t) = synth(c, 7);
    let m = load(bytes).unwrap();
    // Without and with flash attention; 20 tokens take its one-query kernel, 70 its tiled one.
    for (flash, n) in [(false, 20), (true, 20), (true, 70), (false, 70)] {
        let worst = max_rel_err(&m, c, &t, flash, n);
        assert!(
            worst < 2e-2,
            "{:?} flash {flash} n {n}: relative error {worst}",
            c.arch
        );
    }
}

/// The largest difference between our logits and the reference's over `n` tokens, relative to
/// the largest logit of each row.
fn max_rel_err(m: &Arc<Model>, c: Cfg, t: &Tensors, flash_attn: bool, n: usize) -> f64 {
    let toks = tokens(n, c.n_vocab, 3);
    let want = reference(c, t, &toks);
    let mut s = m
        .new_session(SessionOptions {
            n_ctx: 128,
            flash_attn,
            ..Default::default()
        })
        .unwrap();
    let got = s.eval(&toks, LogitsMode::All).unwrap();
    let mut worst = 0f64;
    for (i, w) in want.iter().enumerate() {
        let scale = w.iter().fold(0f64, |a, v| a.max(v.abs()));
        for (a, b) in got.row(i).iter().zip(w) {
            worst = worst.max((f64::from(*a) - b).abs() / scale);
        }
        if std::env::var_os("CHORD_TEST_VERBOSE").is_some() {
            eprintln!("row {i}: worst so far {worst}");
        }
    }
    worst
}

#[test]
fn llama_matches_reference() {
    check_against_reference(LLAMA);
}

#[test]
fn gemma3_matches_reference() {
    check_against_reference(GEMMA3);
}

/// `got` agrees with `want` to `rel` of `want`'s largest magnitude.
fn assert_close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        diff <= rel * scale,
        "{what}: max diff {diff} vs scale {scale}"
    );
}

/// Batched prefill, token-by-token decoding and any split in between give the same logits:
/// exactly when every call has two or more tokens, and to within roundings for one-token calls,
/// whose F32 matrix products llama.cpp (and so the engine, `fmat`) sums in another order.
#[test]
fn batching_does_not_change_results() {
    for c in all_archs() {
        let m = load(synth(c, 11).0).unwrap();
        let toks = tokens(24, c.n_vocab, 5);
        let mut a = session(&m, 64);
        let all = a.eval(&toks, LogitsMode::All).unwrap().as_slice().to_vec();
        let mut b = session(&m, 64);
        let mut one_by_one = Vec::new();
        for &t in &toks {
            one_by_one.extend_from_slice(b.eval(&[t], LogitsMode::Last).unwrap().last());
        }
        assert_close(&one_by_one, &all, 1e-3, c.arch.name());
        let mut c2 = session(&m, 64);
        c2.eval(&toks[..10], LogitsMode::Last).unwrap();
        let tail = c2.eval(&toks[10..], LogitsMode::All).unwrap();
        assert_eq!(tail.as_slice(), &all[10 * c.n_vocab..]);
        assert_eq!(tail.last(), &all[23 * c.n_vocab..]);
        assert_eq!(c2.n_past(), 24);
    }
}

/// With flash attention, decoding one token at a time agrees with a batched prefill to within
/// the roundings that differ between llama.cpp's two kernels (f16 vs f32 accumulation).
#[test]
fn flash_attention_decode_is_close_to_prefill() {
    for c in [LLAMA, GEMMA3] {
        let m = load(synth(c, 13).0).unwrap();
        let toks = tokens(80, c.n_vocab, 6);
        let opts = SessionOptions {
            n_ctx: 128,
            flash_attn: true,
            ..Default::default()
        };
        let mut a = m.new_session(opts).unwrap();
        let all = a.eval(&toks, LogitsMode::All).unwrap().as_slice().to_vec();
        let mut b = m.new_session(opts).unwrap();
        for (i, &t) in toks.iter().enumerate() {
            let got = b.eval(&[t], LogitsMode::Last).unwrap().last().to_vec();
            let want = &all[i * c.n_vocab..(i + 1) * c.n_vocab];
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (x, y) in got.iter().zip(want) {
                assert!(
                    (x - y).abs() < 1e-2 * scale,
                    "{:?} token {i}: {x} vs {y}",
                    c.arch
                );
            }
        }
    }
}

/// Inputs longer than one batch are split, and the results do not depend on the split (up to
/// the one-row output product of `LogitsMode::Last`, summed in another order as in llama.cpp).
#[test]
fn long_inputs_run_in_batches() {
    let m = load(synth(LLAMA, 1).0).unwrap();
    let toks = tokens(MAX_BATCH + 40, LLAMA.n_vocab, 9);
    let mut s = session(&m, 1024);
    let all = s.eval(&toks, LogitsMode::All).unwrap().as_slice().to_vec();
    assert_eq!(all.len(), toks.len() * LLAMA.n_vocab);
    let mut s2 = session(&m, 1024);
    let last = s2.eval(&toks, LogitsMode::Last).unwrap();
    assert_eq!(last.rows(), 1);
    assert_close(
        last.last(),
        &all[(toks.len() - 1) * LLAMA.n_vocab..],
        1e-5,
        "last",
    );
}

#[test]
fn reset_starts_over() {
    let m = load(synth(LLAMA, 2).0).unwrap();
    let toks = tokens(8, LLAMA.n_vocab, 4);
    let mut s = session(&m, 32);
    let first = s.eval(&toks, LogitsMode::All).unwrap().as_slice().to_vec();
    s.eval(&toks, LogitsMode::Last).unwrap();
    assert_eq!(s.n_past(), 16);
    s.reset();
    assert_eq!(s.n_past(), 0);
    assert_eq!(
        s.eval(&toks, LogitsMode::All).unwrap().as_slice(),
        &first[..]
    );
}

#[test]
fn bad_tokens_and_full_context_are_errors() {
    let m = load(synth(LLAMA, 3).0).unwrap();
    let mut s = session(&m, 16);
    assert!(matches!(
        s.eval(&[], LogitsMode::Last),
        Err(Error::InvalidArgument(_))
    ));
    let bad = LLAMA.n_vocab as u32;
    assert!(matches!(
        s.eval(&[1, bad], LogitsMode::Last),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.eval(&[u32::MAX], LogitsMode::Last),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(s.n_past(), 0);
    s.eval(&tokens(12, LLAMA.n_vocab, 1), LogitsMode::Last)
        .unwrap();
    let e = s.eval(&tokens(5, LLAMA.n_vocab, 2), LogitsMode::Last);
    assert!(matches!(e, Err(Error::ContextFull(_))), "{e:?}");
    assert_eq!(
        s.n_past(),
        12,
        "a refused eval leaves the session as it was"
    );
    s.eval(&tokens(4, LLAMA.n_vocab, 2), LogitsMode::Last)
        .unwrap();
    assert!(matches!(
        s.eval(&[0], LogitsMode::Last),
        Err(Error::ContextFull(_))
    ));
}

/// With context shift on, a full window drops the older half after `n_keep` and goes on. With
/// one layer the keys and values of the surviving tokens do not depend on the dropped ones, so
/// the result must be close to a fresh session fed only the survivors (the shifted keys are
/// re-rotated in f16, as llama.cpp does, so not bit-identical).
#[test]
fn context_shift_keeps_going() {
    for c in all_archs() {
        for n_layer in [1, c.n_layer] {
            let c = Cfg { n_layer, ..c };
            let m = load(synth(c, 5).0).unwrap();
            let opts = SessionOptions {
                n_ctx: 16,
                context_shift: true,
                n_keep: 2,
                ..Default::default()
            };
            let mut s = m.new_session(opts).unwrap();
            let toks = tokens(17, c.n_vocab, 8);
            s.eval(&toks[..16], LogitsMode::Last).unwrap();
            assert_eq!(s.n_past(), 16);
            // 16 full: discard (16 - 2) / 2 = 7 tokens after the first 2, then append one.
            let got = s
                .eval(&toks[16..], LogitsMode::Last)
                .unwrap()
                .last()
                .to_vec();
            assert_eq!(s.n_past(), 10);
            if n_layer == 1 {
                let kept: Vec<u32> = toks[..2].iter().chain(&toks[9..]).copied().collect();
                let mut fresh = session(&m, 16);
                let want = fresh.eval(&kept, LogitsMode::Last).unwrap().last().to_vec();
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 2e-3 * scale, "{:?}: {a} vs {b}", c.arch);
                }
            }
            // Keeps going for many more tokens, also in batches that need a shift.
            for &t in &tokens(40, c.n_vocab, 10) {
                let l = s.eval(&[t], LogitsMode::Last).unwrap();
                assert!(l.last().iter().all(|v| v.is_finite()));
                assert!(s.n_past() <= 16);
            }
            s.eval(&tokens(9, c.n_vocab, 12), LogitsMode::All).unwrap();
            assert!(s.n_past() <= 16);
            // A batch that cannot fit even after shifting is refused, and changes nothing.
            let before = s.n_past();
            let e = s.eval(&tokens(15, c.n_vocab, 13), LogitsMode::Last);
            assert!(matches!(e, Err(Error::ContextFull(_))), "{e:?}");
            assert_eq!(s.n_past(), before);
        }
    }
}

#[test]
fn session_options_are_checked() {
    let m = load(synth(LLAMA, 3).0).unwrap();
    let bad = SessionOptions {
        n_ctx: 8,
        context_shift: true,
        n_keep: 8,
        ..Default::default()
    };
    assert!(matches!(m.new_session(bad), Err(Error::InvalidArgument(_))));
    let huge = SessionOptions {
        n_ctx: usize::MAX,
        ..Default::default()
    };
    assert!(m.new_session(huge).is_err());
    let s = m
        .new_session(SessionOptions {
            n_ctx: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(s.n_ctx(), 256, "0 means the training context");
}

// ---------------------------------------------------------------------------------------------
// Hyperparameter and tensor checks

/// A synthetic llama with one metadata entry replaced (or removed with `None`).
fn with_kv(key: &str, value: Option<Value>) -> Result<Arc<Model>> {
    let (bytes, _) = synth(LLAMA, 1);
    let src: &[u8] = &bytes;
    let g = Gguf::read(src).unwrap();
    let mut w = GgufWriter::new();
    let mut seen = false;
    for (k, v) in g.metadata.iter() {
        if k == key {
            seen = true;
            if let Some(v) = &value {
                w.kv(k, v.clone());
            }
        } else {
            w.kv(k, v.clone());
        }
    }
    if !seen && let Some(v) = value {
        w.kv(key, v);
    }
    for t in &g.tensors {
        let mut data = vec![0u8; t.size as usize];
        src.read_exact_at(g.tensor_data_offset(t), &mut data)
            .unwrap();
        w.tensor(t.name.clone(), &t.dims, t.ty, data).unwrap();
    }
    load(w.to_bytes())
}

fn invalid(r: Result<Arc<Model>>, needle: &str) {
    match r {
        Err(Error::InvalidModel(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
        Err(e) => panic!("expected InvalidModel({needle}), got {e:?}"),
        Ok(_) => panic!("expected InvalidModel({needle}), got a model"),
    }
}

#[test]
fn hparams_are_checked() {
    assert!(with_kv("llama.block_count", None).is_err());
    invalid(with_kv("llama.block_count", None), "llama.block_count");
    invalid(
        with_kv("llama.embedding_length", Some(Value::U32(0))),
        "embedding_length",
    );
    invalid(
        with_kv("llama.attention.head_count", Some(Value::U32(0))),
        "head_count",
    );
    invalid(
        with_kv("llama.attention.head_count_kv", Some(Value::U32(3))),
        "not a multiple",
    );
    invalid(
        with_kv("llama.block_count", Some(Value::U32(100_000))),
        "block_count",
    );
    invalid(
        with_kv(
            "llama.attention.layer_norm_rms_epsilon",
            Some(Value::F32(f32::NAN)),
        ),
        "epsilon",
    );
    invalid(
        with_kv("llama.rope.freq_base", Some(Value::F32(-1.0))),
        "freq_base",
    );
    invalid(
        with_kv("llama.rope.dimension_count", Some(Value::U32(7))),
        "dimension_count",
    );
    invalid(
        with_kv("llama.embedding_length", Some(Value::String("x".into()))),
        "embedding_length",
    );
    // Shapes that contradict the hyperparameters.
    invalid(
        with_kv("llama.feed_forward_length", Some(Value::U32(128))),
        "ffn_gate",
    );
    invalid(
        with_kv("llama.attention.key_length", Some(Value::U32(8))),
        "attn_q",
    );
    invalid(
        with_kv("llama.vocab_size", Some(Value::U32(41))),
        "token_embd",
    );
    match with_kv("general.architecture", Some(Value::String("mamba9".into()))) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("mamba9"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hparams_of_gemma3() {
    let m = load(synth(GEMMA3, 1).0).unwrap();
    let hp = m.hparams();
    assert_eq!(hp.rope_type, RopeType::Neox);
    assert_eq!(hp.n_swa, 4);
    let pattern: Vec<bool> = (0..7).map(|il| hp.is_swa(il)).collect();
    assert_eq!(pattern, [true, true, true, true, true, false, true]);
    assert_eq!(hp.rope_freq_base_swa, 10_000.0);
    assert_eq!(hp.attn_scale, 1.0 / (32f32).sqrt());
    assert_eq!(hp.final_softcap, None);
}

#[test]
fn tied_output_uses_the_embedding() {
    let (bytes, mut t) = synth(LLAMA, 4);
    let src: &[u8] = &bytes;
    let g = Gguf::read(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata.iter() {
        w.kv(k, v.clone());
    }
    for ti in g.tensors.iter().filter(|t| t.name != "output.weight") {
        let mut data = vec![0u8; ti.size as usize];
        src.read_exact_at(g.tensor_data_offset(ti), &mut data)
            .unwrap();
        w.tensor(ti.name.clone(), &ti.dims, ti.ty, data).unwrap();
    }
    let m = load(w.to_bytes()).unwrap();
    let emb = t.get("token_embd.weight").to_vec();
    t.0.iter_mut().find(|x| x.0 == "output.weight").unwrap().2 = emb;
    let worst = max_rel_err(&m, LLAMA, &t, false, 20);
    assert!(worst < 2e-2, "relative error {worst}");
}

/// Under a byte budget the layers that do not fit are read on demand, one at a time, and the
/// logits are exactly those of the fully resident model; a budget below one layer is an error.
#[test]
fn layer_cache_streams_layers_with_the_same_results() {
    for c in all_archs() {
        let (bytes, _) = synth(c, 13);
        let full = load(bytes.clone()).unwrap();
        let total = full.cache_stats().resident_bytes;
        let toks = tokens(12, c.n_vocab, 3);
        let want = session(&full, 64)
            .eval(&toks, LogitsMode::All)
            .unwrap()
            .as_slice()
            .to_vec();
        let head = {
            let o = full.output.as_ref().map_or(0, |m| m.resident_bytes());
            (o + 4 * full.output_norm.len()) as u64
        };
        let layer = (total - head) / c.n_layer as u64;
        let mut streamed_somewhere = false;
        for budget in [
            total,
            head + 2 * layer + layer / 2,
            head + layer + layer / 2,
            head + layer / 2,
        ] {
            let src: SharedSource = Arc::new(bytes.clone());
            let gguf = Gguf::read(&*src).unwrap();
            let opts = CacheOptions {
                budget_bytes: Some(budget),
                prefetch_layers: 1,
            };
            let m = match Model::load_with(src, gguf, opts) {
                Ok(m) => Arc::new(m),
                Err(e) => {
                    assert!(budget < head + layer, "{:?} budget {budget}: {e}", c.arch);
                    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
                    continue;
                }
            };
            let mut s = session(&m, 64);
            // Twice: the second pass finds the pinned layers and reloads the streamed ones.
            for _ in 0..2 {
                s.reset();
                let got = s.eval(&toks, LogitsMode::All).unwrap().as_slice().to_vec();
                assert_eq!(got, want, "{:?} budget {budget}", c.arch);
            }
            let st = m.cache_stats();
            assert_eq!(st.pinned_layers + st.streamed_layers, c.n_layer);
            assert!(st.resident_bytes <= budget, "{st:?} over {budget}");
            if st.streamed_layers > 0 {
                streamed_somewhere = true;
                assert!(
                    st.layer_loads >= 2 * st.streamed_layers as u64 - 1,
                    "{st:?}"
                );
            }
        }
        assert!(
            streamed_somewhere,
            "{:?}: no budget made layers stream",
            c.arch
        );
    }
}

/// f16 rounding a block at a time (F16C where the CPU has it) is the one-at-a-time rounding, bit
/// for bit: ties, subnormals, overflow, infinities, a long run of ordinary values and a sweep of
/// f32 bit patterns (NaNs included) (GeGLU takes its table indices from the same block
/// conversion).
#[test]
fn f16_rounding_of_slices_is_elementwise() {
    let mut xs: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) * 0.0137).collect();
    xs.extend([
        0.0,
        -0.0,
        1.0 + 1.0 / 2048.0, // a tie: rounds to even
        1.0 + 3.0 / 2048.0,
        65504.0,
        65520.0, // rounds to infinity
        1e9,
        -1e9,
        5.96e-8, // the smallest subnormal
        2.98e-8,
        1e-6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -6.1e-5, // around the smallest normal f16
        6.1035156e-5,
        6.097e-5,
        -3e-8,
        65519.0,
        -65520.0,
        f32::MIN_POSITIVE,
        1e-45,
    ]);
    // Every 1021st f32 bit pattern: all exponents, signs and mantissa phases (NaNs included).
    xs.extend((0..=u32::MAX / 1021).map(|i| f32::from_bits(i.wrapping_mul(1021))));
    for len in [xs.len(), 1, 3, 63, 64, 65, 130] {
        let src = &xs[xs.len() - len..];
        let mut got = vec![f32::NAN; len];
        ops::round_f16_into(src, &mut got);
        for (x, g) in src.iter().zip(&got) {
            let want = half::f16::from_f32(*x);
            assert_eq!(
                g.to_bits(),
                want.to_f32().to_bits(),
                "{x} ({:#x})",
                x.to_bits()
            );
        }
    }
}

//! Synthetic models: valid GGUFs with seeded random weights of a given architecture, shape and
//! tensor type, with the tokenizer copied from a real GGUF. They are for tests and benchmarks at
//! sizes no package ships (a llama-7B shape over 4 GiB), so they are written streaming and
//! deterministically: the same spec and seed give the same bytes.

use std::io::Write;
use std::path::Path;

use chord_engine::gguf::names::Kv;
use chord_engine::gguf::{Gguf, GgufWriter, Value};
use chord_engine::quant::GgmlType;

use crate::{Error, Result};

/// The shape and type of a synthetic llama-architecture model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ctx: u64,
    /// Type of the matrices (token embeddings and output included); norms are F32.
    pub ty: GgmlType,
    pub seed: u64,
}

impl SynthSpec {
    /// Named shapes: `llama-7b` (Llama 2 7B), `llama-4g` (a 7B-wide model with 42 layers: just over
    /// 4 GiB in Q4_0), `llama-tiny` (for quick tests).
    pub fn preset(name: &str, ty: GgmlType, seed: u64) -> Result<Self> {
        let (n_embd, n_layer, n_ff, n_head, n_head_kv) = match name {
            "llama-7b" => (4096, 32, 11008, 32, 32),
            "llama-4g" => (4096, 42, 11008, 32, 8),
            "llama-tiny" => (256, 2, 512, 4, 2),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown synth preset `{name}` (known: llama-7b, llama-4g, llama-tiny)"
                )));
            }
        };
        Ok(SynthSpec {
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            n_ctx: 4096,
            ty,
            seed,
        })
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if [
            self.n_embd,
            self.n_layer,
            self.n_ff,
            self.n_head,
            self.n_head_kv,
            self.n_ctx,
        ]
        .contains(&0)
        {
            return bad("every dimension must be positive".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "n_embd {} must divide by n_head {}, and n_head by n_head_kv {}",
                self.n_embd, self.n_head, self.n_head_kv
            ));
        }
        if !matches!(
            self.ty,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::F16 | GgmlType::F32
        ) {
            return bad(format!(
                "synth writes Q4_0, Q4_1, Q8_0, F16 or F32, not {}",
                self.ty.name()
            ));
        }
        let bs = self.ty.block_size() as u64;
        if !self.n_embd.is_multiple_of(bs) || !self.n_ff.is_multiple_of(bs) {
            return bad(format!(
                "n_embd and n_ff must be multiples of the {} block size {bs}",
                self.ty.name()
            ));
        }
        Ok(())
    }
}

/// Writes the model to `out` (through a temporary file, renamed when complete) and returns its size.
/// `progress(done, total)` is called as bytes are written.
pub fn write_synth(
    spec: &SynthSpec,
    vocab_from: &Path,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64> {
    spec.check()?;
    let src = std::fs::File::open(vocab_from).map_err(Error::io(vocab_from))?;
    let vocab_gguf = Gguf::read(&src)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", vocab_from.display())))?;
    let n_vocab = match vocab_gguf.metadata.get(Kv::TokenizerTokens.pattern()) {
        Some(Value::Array(a)) if !a.is_empty() => a.len() as u64,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{} has no tokenizer.ggml.tokens",
                vocab_from.display()
            )));
        }
    };

    let arch = "llama";
    let mut w = GgufWriter::new();
    w.kv(
        Kv::GeneralArchitecture.key(arch),
        Value::String(arch.into()),
    )
    .kv(
        Kv::GeneralName.key(arch),
        Value::String(format!("synthetic llama seed {}", spec.seed)),
    )
    .kv(Kv::ContextLength.key(arch), Value::U32(spec.n_ctx as u32))
    .kv(
        Kv::EmbeddingLength.key(arch),
        Value::U32(spec.n_embd as u32),
    )
    .kv(Kv::BlockCount.key(arch), Value::U32(spec.n_layer as u32))
    .kv(
        Kv::FeedForwardLength.key(arch),
        Value::U32(spec.n_ff as u32),
    )
    .kv(
        Kv::AttentionHeadCount.key(arch),
        Value::U32(spec.n_head as u32),
    )
    .kv(
        Kv::AttentionHeadCountKv.key(arch),
        Value::U32(spec.n_head_kv as u32),
    )
    .kv(Kv::AttentionLayerNormRmsEpsilon.key(arch), Value::F32(1e-5))
    .kv(Kv::RopeFreqBase.key(arch), Value::F32(10000.0))
    .kv(
        Kv::RopeDimensionCount.key(arch),
        Value::U32((spec.n_embd / spec.n_head) as u32),
    )
    .kv(Kv::VocabSize.key(arch), Value::U32(n_vocab as u32));
    for (k, v) in vocab_gguf.metadata.iter() {
        // The chat template too: a synthetic model is driven like the real one it borrows from.
        if k.starts_with("tokenizer.") {
            w.kv(k, v.clone());
        }
    }

    let (e, ff, kv) = (
        spec.n_embd,
        spec.n_ff,
        spec.n_embd / spec.n_head * spec.n_head_kv,
    );
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = vec![
        ("token_embd.weight".into(), vec![e, n_vocab], spec.ty),
        ("output_norm.weight".into(), vec![e], GgmlType::F32),
        ("output.weight".into(), vec![e, n_vocab], spec.ty),
    ];
    for l in 0..spec.n_layer {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        tensors.extend([
            (t("attn_norm"), vec![e], GgmlType::F32),
            (t("attn_q"), vec![e, e], spec.ty),
            (t("attn_k"), vec![e, kv], spec.ty),
            (t("attn_v"), vec![e, kv], spec.ty),
            (t("attn_output"), vec![e, e], spec.ty),
            (t("ffn_norm"), vec![e], GgmlType::F32),
            (t("ffn_gate"), vec![e, ff], spec.ty),
            (t("ffn_up"), vec![e, ff], spec.ty),
            (t("ffn_down"), vec![ff, e], spec.ty),
        ]);
    }
    let mut total = 0u64;
    for (name, dims, ty) in &tensors {
        total += w
            .tensor_streamed(name.clone(), dims, *ty)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(dir))?;
    let mut file = std::io::BufWriter::with_capacity(8 << 20, tmp.as_file());
    let mut done = 0u64;
    w.write_streaming(&mut file, |i, name, out| {
        let (_, dims, ty) = &tensors[i];
        // Output logits a few times wider than unit scale, so greedy top-1 margins are clear.
        let scale = match name {
            // Norm weights: near 1 (write_random treats a zero scale as "norm").
            n if n.ends_with("norm.weight") => 0.0,
            "token_embd.weight" => 1.0,
            "output.weight" => 4.0 / (dims[0] as f32).sqrt(),
            _ => 1.0 / (dims[0] as f32).sqrt(),
        };
        let mut rng = SplitMix64::new(spec.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let size = GgufWriter::tensor_size(dims, *ty).map_err(std::io::Error::other)?;
        write_random(out, *ty, size, scale, &mut rng, |n| {
            done += n;
            progress(done, total);
        })
    })
    .and_then(|()| file.flush())
    .map_err(Error::io(out))?;
    drop(file);
    // A temp file is private (0600); a model file is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(tmp.path(), perms).map_err(Error::io(tmp.path()))?;
    }
    tmp.persist(out).map_err(|e| Error::Io {
        path: out.to_owned(),
        err: e.error,
    })?;
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(Error::io(out))
}

/// Writes `size` bytes of random `ty` data whose values have roughly standard deviation `scale`.
fn write_random(
    out: &mut impl Write,
    ty: GgmlType,
    size: u64,
    scale: f32,
    rng: &mut SplitMix64,
    mut written: impl FnMut(u64),
) -> std::io::Result<()> {
    let block = ty.type_size();
    let blocks_per_chunk = (1 << 20) / block;
    let mut buf = vec![0u8; blocks_per_chunk * block];
    let mut left = size / block as u64;
    let f16 = |x: f32| half::f16::from_f32(x).to_le_bytes();
    while left > 0 {
        let n = left.min(blocks_per_chunk as u64) as usize;
        for b in buf[..n * block].chunks_exact_mut(block) {
            let jitter = 0.75 + 0.5 * rng.unit();
            match ty {
                // Nibbles minus 8 are -8..=7, whose mean of -0.5 would give every matrix a
                // common direction (and the model an output that ignores its input): nibble 0
                // becomes 8, leaving -7..=7 (0 twice as likely), zero mean, deviation ≈ 4.2.
                GgmlType::Q4_0 => {
                    b[..2].copy_from_slice(&f16(scale * jitter / 4.2));
                    rng.fill(&mut b[2..]);
                    for q in &mut b[2..] {
                        let (lo, hi) = (*q & 0x0F, *q >> 4);
                        *q = (if lo == 0 { 8 } else { lo }) | (if hi == 0 { 8 } else { hi }) << 4;
                    }
                }
                // Nibbles minus 7.5: symmetric, deviation ≈ 4.61.
                GgmlType::Q4_1 => {
                    let d = scale * jitter / 4.61;
                    b[..2].copy_from_slice(&f16(d));
                    b[2..4].copy_from_slice(&f16(-7.5 * d));
                    rng.fill(&mut b[4..]);
                }
                // Uniform bytes in -127..=127 have standard deviation ≈ 73.3.
                GgmlType::Q8_0 => {
                    b[..2].copy_from_slice(&f16(scale * jitter / 73.3));
                    rng.fill(&mut b[2..]);
                    for q in &mut b[2..] {
                        if *q == 0x80 {
                            *q = 0x81;
                        }
                    }
                }
                GgmlType::F16 => b.copy_from_slice(&f16(scale * 1.73 * (2.0 * rng.unit() - 1.0))),
                GgmlType::F32 if scale == 0.0 => {
                    b.copy_from_slice(&(0.9 + 0.2 * rng.unit()).to_le_bytes());
                }
                _ => b.copy_from_slice(&(scale * 1.73 * (2.0 * rng.unit() - 1.0)).to_le_bytes()),
            }
        }
        out.write_all(&buf[..n * block])?;
        written((n * block) as u64);
        left -= n as u64;
    }
    Ok(())
}

/// splitmix64: tiny, fast, and the same on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn fill(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
    }
}

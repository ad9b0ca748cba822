//! One forward token (decode) of the real models, SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M,
//! after a 64-token prompt, four ways:
//!
//! - `native-engine`: the engine as a Rust library, its own kernels on this thread;
//! - `native-cpu-1t`: the engine as a library with its matrices on the host CPU backend (one
//!   thread), as `chord bench --native` runs it;
//! - `component-cpu-1t`: the engine component in wasmtime, its products submitted to the same
//!   backend through `chord:compute` (`chord`'s default);
//! - `component-guest`: the component's own wasm SIMD kernels (`chord --backend guest`).
//!
//! A decode step's cost grows with its position (attention), so the timed tokens stay at
//! positions 64..80: after 16 of them the session is reset and the prompt evaluated again,
//! untimed. Each eval computes the last token's logits, as generation does. A model whose file is
//! missing is skipped (`chord pull`, or `CHORD_MODELS_DIR`). `cargo bench -p chord-benches
//! --bench forward`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chord_benches::{GEMMA3, SMOLLM2, model_path, token};
use chord_engine::model::{LogitsMode, Model, Session, SessionOptions as NativeOptions};
use chord_host::compute::cpu::CpuBackend;
use chord_host::{Runtime, SessionHandle};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

const PROMPT: u32 = 64;
/// Timed decode positions per prompt evaluation.
const WINDOW: u32 = 16;
const N_CTX: u32 = 128;

/// Something that evaluates tokens: the engine natively, or the component.
enum Target {
    Native(Box<Session>),
    Component(Box<Runtime>, SessionHandle),
}

impl Target {
    fn native(path: &Path, cpu_threads: Option<usize>) -> anyhow::Result<(Target, u32)> {
        let file = std::fs::File::open(path)?;
        let src: chord_engine::model::SharedSource = Arc::new(file);
        let gguf = chord_engine::gguf::Gguf::read(&*src)?;
        let model = match cpu_threads {
            None => Model::load(src, gguf)?,
            Some(t) => {
                let map_file = std::fs::File::open(path)?;
                // SAFETY: read-only map of a model file nobody writes while the bench runs (as
                // `chord bench --native` and the store map it).
                let map = unsafe { memmap2::Mmap::map(&map_file) }?;
                Model::load_on(src, gguf, CpuBackend::new(t)?.device(Arc::new(map)))?
            }
        };
        let model = Arc::new(model);
        let vocab = u32::try_from(model.hparams().n_vocab)?;
        let session = model.new_session(NativeOptions {
            n_ctx: N_CTX as usize,
            ..NativeOptions::default()
        })?;
        Ok((Target::Native(Box::new(session)), vocab))
    }

    fn component(path: &Path, cpu_threads: Option<usize>) -> anyhow::Result<(Target, u32)> {
        let (mut rt, model, session) = chord_benches::component_session(path, cpu_threads, N_CTX)?;
        let vocab = rt.model_info(&model)?.hyperparameters.vocab_size;
        Ok((Target::Component(Box::new(rt), session), vocab))
    }

    fn reset(&mut self) -> anyhow::Result<()> {
        match self {
            Target::Native(s) => s.reset(),
            Target::Component(rt, s) => rt.reset(s)?,
        }
        Ok(())
    }

    fn feed(&mut self, tokens: &[u32]) -> anyhow::Result<()> {
        match self {
            Target::Native(s) => {
                s.eval(tokens, LogitsMode::Last)?;
            }
            Target::Component(rt, s) => rt.feed(s, tokens)?,
        }
        Ok(())
    }
}

/// Decode steps at positions `PROMPT..PROMPT + WINDOW` over and over, timing only the steps.
struct Decoder {
    target: Target,
    prompt: Vec<u32>,
    vocab: u32,
    pos: u32,
}

impl Decoder {
    fn new(target: Target, vocab: u32) -> Decoder {
        Decoder {
            target,
            prompt: (0..PROMPT).map(|i| token(i, vocab)).collect(),
            vocab,
            // Forces a prompt evaluation before the first step.
            pos: PROMPT + WINDOW,
        }
    }

    fn step(&mut self) -> anyhow::Result<Duration> {
        if self.pos == PROMPT + WINDOW {
            self.target.reset()?;
            self.target.feed(&self.prompt)?;
            self.pos = PROMPT;
        }
        let t = token(self.pos, self.vocab);
        let t0 = Instant::now();
        self.target.feed(&[t])?;
        let dt = t0.elapsed();
        self.pos += 1;
        Ok(dt)
    }
}

type Open = fn(&Path, Option<usize>) -> anyhow::Result<(Target, u32)>;

fn forward(c: &mut Criterion) {
    let variants: [(&str, Open, Option<usize>); 4] = [
        ("native-engine", Target::native, None),
        ("native-cpu-1t", Target::native, Some(1)),
        ("component-cpu-1t", Target::component, Some(1)),
        ("component-guest", Target::component, None),
    ];
    for name in [SMOLLM2, GEMMA3] {
        let path = match model_path(name) {
            Ok(p) => p,
            Err(why) => {
                eprintln!("forward: skipping {name}: {why}");
                continue;
            }
        };
        let mut g = c.benchmark_group(format!("forward/{name}/decode_at_{PROMPT}"));
        // Flat: as few as one step per sample, so the slow guest variant stays short.
        g.sampling_mode(SamplingMode::Flat);
        for (variant, open, threads) in variants {
            // One model loaded at a time (Gemma's weights are 240 MB per copy).
            let (target, vocab) = match open(&path, threads)
                .with_context(|| format!("{variant}: {}", path.display()))
            {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("forward: skipping {name} {variant}: {e:#}");
                    continue;
                }
            };
            let mut dec = Decoder::new(target, vocab);
            g.bench_function(variant, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| dec.step().expect("decode step"))
                        .sum::<Duration>()
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // A token takes 10-400 ms here: few samples, short runs (the command line overrides).
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = forward
}
criterion_main!(benches);

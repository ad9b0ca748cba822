//! The cost of one guest→host compute submission: one `chord:compute` call. With the host's CPU
//! backend that is one `program.run` per token (the whole forward step on the host); a device
//! without programs gets one `matrix.matmul` per weight matrix and one `kv-cache.attend` per layer.
//!
//! Two tiny synthetic llama models (n_embd 32, n_ff 64, Q8_0, 1 and 17 layers, the 32000-token
//! vocabulary of the committed llama-spm fixture), so small that a decode step is mostly calls
//! and the output head rather than arithmetic. Each decodes one token (positions 8..24 after an
//! 8-token prompt) on the host CPU backend with one thread, natively (`native-cpu-1t`: the engine
//! as a library, the backend as its device, as `chord bench --native`) and through the component
//! (`component-cpu-1t`). Both run the same kernels on the same thread; the component adds the
//! calls (arguments copied into and out of guest memory, resource lookups) plus its own wasm for
//! what stays in the guest (norms, RoPE, the embedding row read through the store).
//!
//! The submissions per token are counted, not assumed: a native decode step through a device
//! that counts its program runs, products and attention calls (those a program run makes on the
//! device count as part of its one submission). At the end the bench prints, from the
//! per-iteration times it saw (median of criterion's samples):
//!
//! - per model: (component − native) / submissions, an upper bound (it charges the guest's own
//!   work and the 32000-logit output head's 125 KiB result to the calls);
//! - across models: the growth of (component − native) per added layer between 1 and 17 layers,
//!   which cancels the per-token costs (the feed call, embedding, output head) and leaves what a
//!   layer costs through the component beyond its native cost (its calls, if the layer makes any,
//!   and the guest's per-layer wasm).
//!
//! `cargo bench -p chord-benches --bench submission`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chord_benches::token;
use chord_engine::model::{
    AttnCfg, Device, DeviceKv, DeviceMatrix, DeviceProgram, DeviceRun, KvShape, LogitsMode, Model,
    Rope, Rows, Session, SessionOptions as NativeOptions,
};
use chord_engine::quant::GgmlType;
use chord_host::compute::cpu::CpuBackend;
use chord_host::synth::{SynthSpec, write_synth};
use chord_host::{Runtime, SessionHandle};
use criterion::Criterion;

const LAYERS: [u64; 2] = [1, 17];
const PROMPT: u32 = 8;
const WINDOW: u32 = 16;
const N_CTX: u32 = 64;

fn spec(n_layer: u64) -> SynthSpec {
    SynthSpec {
        n_embd: 32,
        n_layer,
        n_ff: 64,
        n_head: 2,
        n_head_kv: 2,
        n_ctx: u64::from(N_CTX),
        ty: GgmlType::Q8_0,
        seed: 7,
    }
}

/// An engine device that counts the calls (products and attention) submitted to the device it
/// wraps.
struct Counting {
    inner: Arc<dyn Device>,
    calls: Arc<AtomicU64>,
}

struct CountingMatrix {
    inner: Box<dyn DeviceMatrix>,
    calls: Arc<AtomicU64>,
}

impl Device for Counting {
    fn upload(
        &self,
        name: &str,
        ty: GgmlType,
        n_cols: usize,
        n_rows: usize,
        offset: u64,
    ) -> chord_engine::Result<Box<dyn DeviceMatrix>> {
        Ok(Box::new(CountingMatrix {
            inner: self.inner.upload(name, ty, n_cols, n_rows, offset)?,
            calls: self.calls.clone(),
        }))
    }

    fn kv_cache(&self, shape: &KvShape) -> chord_engine::Result<Option<Box<dyn DeviceKv>>> {
        Ok(self.inner.kv_cache(shape)?.map(|inner| {
            Box::new(CountingKv {
                inner,
                calls: self.calls.clone(),
            }) as Box<dyn DeviceKv>
        }))
    }

    fn program(
        &self,
        p: DeviceProgram,
        max_tokens: usize,
    ) -> chord_engine::Result<Option<Box<dyn DeviceRun>>> {
        Ok(self.inner.program(p, max_tokens)?.map(|inner| {
            Box::new(CountingRun {
                inner,
                calls: self.calls.clone(),
            }) as Box<dyn DeviceRun>
        }))
    }
}

/// A program whose runs count as one submission each, whatever they call on the device.
struct CountingRun {
    inner: Box<dyn DeviceRun>,
    calls: Arc<AtomicU64>,
}

impl DeviceRun for CountingRun {
    fn run(
        &mut self,
        kv: &mut dyn DeviceKv,
        pos0: usize,
        n: usize,
        x: &[f32],
        rows: Rows,
        logits: &mut [f32],
    ) -> chord_engine::Result<()> {
        let before = self.calls.load(Ordering::Relaxed);
        let r = self.inner.run(kv, pos0, n, x, rows, logits);
        self.calls.store(before + 1, Ordering::Relaxed);
        r
    }
}

/// A KV cache whose attention calls are counted with the products.
struct CountingKv {
    inner: Box<dyn DeviceKv>,
    calls: Arc<AtomicU64>,
}

impl DeviceKv for CountingKv {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn attend(
        &mut self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> chord_engine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.attend(il, cfg, pos0, n, q, k, v, out)
    }

    fn shift(
        &mut self,
        n_past: usize,
        n_keep: usize,
        n_discard: usize,
        ropes: &[Rope<'_>],
    ) -> chord_engine::Result<()> {
        self.inner.shift(n_past, n_keep, n_discard, ropes)
    }
}

impl DeviceMatrix for CountingMatrix {
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> chord_engine::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.matmul(x, n, out)
    }
}

fn native_model(path: &Path, device: impl FnOnce(Arc<dyn Device>) -> Arc<dyn Device>) -> Model {
    let src: chord_engine::model::SharedSource =
        Arc::new(std::fs::File::open(path).expect("open synthetic model"));
    let gguf = chord_engine::gguf::Gguf::read(&*src).expect("read synthetic model");
    let file = std::fs::File::open(path).expect("open synthetic model");
    // SAFETY: read-only map of the bench's own temporary file, which nothing writes any more.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("map synthetic model");
    let cpu = CpuBackend::new(1)
        .expect("cpu backend")
        .device(Arc::new(map));
    Model::load_on(src, gguf, device(cpu)).expect("load synthetic model")
}

fn native_session(model: Model) -> Session {
    Arc::new(model)
        .new_session(NativeOptions {
            n_ctx: N_CTX as usize,
            ..NativeOptions::default()
        })
        .expect("session")
}

/// Calls one decode step submits, counted on a native run.
fn submissions_per_token(path: &Path, vocab: u32) -> u64 {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let mut s = native_session(native_model(path, |inner| {
        Arc::new(Counting { inner, calls: c })
    }));
    let prompt: Vec<u32> = (0..PROMPT).map(|i| token(i, vocab)).collect();
    s.eval(&prompt, LogitsMode::Last).expect("prompt");
    let before = calls.load(Ordering::Relaxed);
    s.eval(&[token(PROMPT, vocab)], LogitsMode::Last)
        .expect("decode");
    calls.load(Ordering::Relaxed) - before
}

enum Target {
    Native(Box<Session>),
    Component(Box<Runtime>, SessionHandle),
}

impl Target {
    fn feed(&mut self, tokens: &[u32]) {
        match self {
            Target::Native(s) => {
                s.eval(tokens, LogitsMode::Last).expect("eval");
            }
            Target::Component(rt, s) => rt.feed(s, tokens).expect("feed"),
        }
    }

    fn reset(&mut self) {
        match self {
            Target::Native(s) => s.reset(),
            Target::Component(rt, s) => rt.reset(s).expect("reset"),
        }
    }
}

fn component(path: &Path) -> chord_host::Result<Target> {
    let (rt, _model, session) = chord_benches::component_session(path, Some(1), N_CTX)?;
    Ok(Target::Component(Box::new(rt), session))
}

/// Per-iteration times (ns) of each criterion sample, by (layers, variant).
type Samples = Mutex<BTreeMap<(u64, &'static str), Vec<f64>>>;

fn bench(c: &mut Criterion, samples: &Samples) -> anyhow::Result<Vec<(u64, u64)>> {
    // A committed vocabulary: the bench needs no model download.
    let vocab_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/vocab/ggml-vocab-llama-spm.gguf");
    let dir = tempfile::tempdir()?;
    let mut counts = Vec::new();
    for n_layer in LAYERS {
        let path = dir.path().join(format!("synth-{n_layer}l.gguf"));
        write_synth(&spec(n_layer), &vocab_path, &path, |_, _| {})?;
        let native = native_session(native_model(&path, |d| d));
        let vocab = u32::try_from(native.model().hparams().n_vocab)?;
        let subs = submissions_per_token(&path, vocab);
        counts.push((n_layer, subs));
        let mut g = c.benchmark_group(format!("submission/synth_{n_layer}l_q8_0_32"));
        let targets: [(&'static str, Target); 2] = [
            ("native-cpu-1t", Target::Native(Box::new(native))),
            ("component-cpu-1t", component(&path)?),
        ];
        for (variant, mut target) in targets {
            let prompt: Vec<u32> = (0..PROMPT).map(|i| token(i, vocab)).collect();
            let mut pos = PROMPT + WINDOW;
            g.bench_function(variant, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if pos == PROMPT + WINDOW {
                            target.reset();
                            target.feed(&prompt);
                            pos = PROMPT;
                        }
                        let t = [token(pos, vocab)];
                        let t0 = Instant::now();
                        target.feed(&t);
                        total += t0.elapsed();
                        pos += 1;
                    }
                    if let Ok(mut s) = samples.lock() {
                        s.entry((n_layer, variant))
                            .or_default()
                            .push(total.as_nanos() as f64 / iters.max(1) as f64);
                    }
                    total
                })
            });
        }
        g.finish();
    }
    Ok(counts)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn summary(samples: &Samples, counts: &[(u64, u64)]) {
    let Ok(samples) = samples.lock() else {
        return;
    };
    if counts.is_empty() {
        return;
    }
    let time = |l: u64, v: &str| samples.get(&(l, v)).and_then(|s| median(s));
    let mut overhead = Vec::new();
    println!("\nsubmission summary (median of criterion's per-iteration sample times):");
    for &(l, subs) in counts {
        let (Some(native), Some(comp)) = (time(l, "native-cpu-1t"), time(l, "component-cpu-1t"))
        else {
            continue;
        };
        let extra = comp - native;
        println!(
            "  {l} layer(s), {subs} submissions/token: native {:.1} µs, component {:.1} µs, \
             component - native {:.1} µs = {:.2} µs per submission (upper bound)",
            native / 1e3,
            comp / 1e3,
            extra / 1e3,
            extra / 1e3 / subs as f64
        );
        overhead.push((l, subs, extra));
    }
    if let [(l0, s0, e0), (l1, s1, e1)] = overhead[..] {
        println!(
            "  per added layer ({l0} -> {l1} layers): {:.2} µs",
            (e1 - e0) / 1e3 / (l1 - l0) as f64
        );
        if s1 > s0 {
            println!(
                "  per added submission ({s0} -> {s1}): {:.2} µs",
                (e1 - e0) / 1e3 / (s1 - s0) as f64
            );
        }
    }
}

fn main() {
    let samples = Samples::default();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    match bench(&mut c, &samples) {
        Ok(counts) => summary(&samples, &counts),
        Err(e) => eprintln!("submission: {e:#}"),
    }
    c.final_summary();
}

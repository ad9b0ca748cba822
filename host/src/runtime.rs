//! The wasmtime embedding: the engine component (built by `build.rs`, embedded in the binary), its
//! compiled-code cache, the linker with WASI and our imports, guest limits and interruption, and the
//! small API the `chord` CLI uses: [`Runtime::new`], [`Runtime::load_model`], [`Runtime::model_info`].
//!
//! Interruption: the engine runs with epoch interruption on. [`InterruptHandle::interrupt`] (e.g. from
//! a Ctrl-C handler, see [`install_ctrlc_handler`]) sets a flag and bumps the epoch itself, so the
//! running call stops at its next loop back-edge or function entry; no ticker thread is needed, as
//! `chord` sets no time limits. A stopped call returns [`Error::Cancelled`]; since wasmtime cannot
//! resume an instance after a trap, the runtime refuses later calls ([`Error::EngineStopped`]).

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{self, wit_llm};
use crate::error::{Error, Result};
use crate::store::{BlobStore, DEFAULT_MAX_READ_LEN, StoreStats};

pub use crate::bindings::wit_llm::{
    ArraySummary, FinishReason, Hyperparameters, LogitBias, MetadataEntry, MetadataValue,
    ModelInfo, PositionLogits, SamplerOptions, SessionOptions, SpecialTokens, TensorTypeCount,
    Token, TokenLogit, Usage,
};

/// The engine component (`chord_engine.wasm`), built for wasm32-wasip2 by `host/build.rs`: the
/// portable build (simd128), the one adapters, jco and browsers get.
pub static ENGINE_WASM: &[u8] = include_bytes!(env!("CHORD_ENGINE_WASM"));

/// The same engine built with relaxed SIMD (`+relaxed-simd`): its kernels use
/// `f32x4.relaxed_madd` where the portable build emulates a fused multiply-add exactly. The
/// runtime sets `relaxed_simd_deterministic`, so the madd is always fused and both builds give the
/// same bits (checked by the component tests).
pub static ENGINE_RELAXED_WASM: &[u8] = include_bytes!(env!("CHORD_ENGINE_RELAXED_WASM"));

/// Which build of the engine component to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestSimd {
    /// [`ENGINE_RELAXED_WASM`] (the default: same results, faster guest kernels).
    #[default]
    Relaxed,
    /// [`ENGINE_WASM`].
    Portable,
}

impl GuestSimd {
    /// The component's bytes.
    pub fn wasm(self) -> &'static [u8] {
        match self {
            GuestSimd::Relaxed => ENGINE_RELAXED_WASM,
            GuestSimd::Portable => ENGINE_WASM,
        }
    }
}

/// Target triple of this host binary: part of the compiled-code cache key.
const HOST_TARGET: &str = env!("CHORD_HOST_TARGET");

/// Default cap on guest linear memory: all a wasm32 guest can address.
pub const DEFAULT_MEMORY_LIMIT: u64 = 4 << 30;

/// How to start a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Most bytes the guest may hold: its linear memory plus the KV caches it keeps on the host's
    /// compute device. An allocation beyond it fails inside the guest (and becomes an
    /// `out-of-memory` error where the engine allocates fallibly); a KV cache beyond it is an
    /// `out-of-memory` error of `kv-cache.create`.
    pub memory_limit: u64,
    /// Where compiled code is cached (`<dir>/compiled/`); `None`: compile on every start.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes one `blob.read` may return.
    pub max_read_len: u32,
    /// Where the model computes: `None`, the guest's own kernels on one thread (the host offers
    /// no compute device); `Some(t)`, the host CPU backend with `t` threads (0: one per core).
    pub cpu_threads: Option<usize>,
    /// Whether the CPU backend runs whole forward steps (`program`, one call per step). `false`
    /// answers `unsupported`: the guest then runs each step and calls the backend per product
    /// and per layer's attention, the path of a device without programs (for tests and A/B
    /// measurements).
    pub cpu_programs: bool,
    /// Which build of the engine runs.
    pub guest_simd: GuestSimd,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            memory_limit: DEFAULT_MEMORY_LIMIT,
            cache_dir: default_cache_dir(),
            max_read_len: DEFAULT_MAX_READ_LEN,
            cpu_threads: Some(0),
            cpu_programs: true,
            guest_simd: GuestSimd::default(),
        }
    }
}

/// Relaxed SIMD on, its madd always fused, so that the relaxed build computes what the portable
/// one does: Cranelift emits the FMA instruction where the CPU has one; elsewhere the
/// deterministic mode makes it a (slow, exact) libcall. The engine's relaxed dot products take
/// 7-bit operands, exact under every lowering.
pub fn configure_relaxed_simd(config: &mut Config) {
    config.wasm_relaxed_simd(true);
    config.relaxed_simd_deterministic(!native_fma());
}

/// Whether this CPU has fused multiply-add instructions (Cranelift then fuses relaxed madd).
fn native_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// `$CHORD_CACHE_DIR`, else the user cache directory's `wasm-chord` (XDG: `~/.cache/wasm-chord`).
pub fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("CHORD_CACHE_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => dirs::cache_dir().map(|d| d.join("wasm-chord")),
    }
}

/// How to load a model (the engine's `load-options`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Context length of sessions; `None`: the model's trained length.
    pub context_length: Option<u32>,
    /// Bytes of weights the guest may keep when it computes itself; `None`: the engine's default.
    pub cache_budget_bytes: Option<u64>,
    /// Drop old tokens instead of stopping when the context fills.
    pub context_shift: bool,
    /// Layers to prefetch ahead of the one being computed.
    pub prefetch_layers: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            context_length: None,
            cache_budget_bytes: None,
            context_shift: false,
            prefetch_layers: 1,
        }
    }
}

/// Where the compiled engine came from on this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Compiled now by Cranelift (first start, or the cache was unusable).
    Compiled,
    /// Loaded from the compiled-code cache.
    Cache,
}

/// How the runtime started, for `chord --verbose` and benchmarks.
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// Compiled or loaded from cache.
    pub code: CodeSource,
    /// Time to compile or to load the compiled code.
    pub prepare: Duration,
    /// Time to link and instantiate.
    pub instantiate: Duration,
    /// The cache file used or written, if any.
    pub cache_file: Option<PathBuf>,
    /// Why the cache could not be used or written, if it could not (the start still succeeds).
    pub cache_error: Option<String>,
}

/// The store context: what the guest's imports see.
pub struct Ctx {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    pub(crate) blobs: Arc<BlobStore>,
    /// The CPU compute backend offered to the guest as device 0, if any.
    pub(crate) cpu: Option<Arc<crate::compute::cpu::CpuBackend>>,
    pub(crate) limits: GuestLimits,
    /// Whether the CPU backend takes programs.
    pub(crate) cpu_programs: bool,
    /// The guest's `chord:compute` calls so far.
    pub(crate) calls: ComputeCalls,
}

/// Counts of the guest's `chord:compute` calls: how a forward step reaches the device (one
/// program run per step, or a call per product and per layer's attention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputeCalls {
    /// `matrix.matmul` calls.
    pub matmul: u64,
    /// `kv-cache.attend` calls.
    pub attend: u64,
    /// `program.run` calls.
    pub program_run: u64,
}

/// Caps what the guest holds (its linear memory and its KV caches on the host) and records how
/// large its memory grew.
pub(crate) struct GuestLimits {
    memory_limit: usize,
    memory_peak: usize,
    /// The linear memory's size now.
    memory_current: usize,
    /// Bytes of the guest's KV caches on the compute device.
    device_bytes: usize,
    /// Whether a growth was refused: a trap after that is most likely the guest running out of
    /// memory in an allocation it could not handle (e.g. the canonical ABI's `cabi_realloc`).
    refused: bool,
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing makes `memory.grow` return -1: the guest's allocator reports failure, which the
        // engine's fallible allocations turn into an `out-of-memory` error.
        if desired.saturating_add(self.device_bytes) > self.memory_limit {
            self.refused = true;
            return Ok(false);
        }
        self.memory_current = desired;
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl GuestLimits {
    /// Takes `bytes` of device memory for the guest, if the limit leaves room for them.
    pub(crate) fn charge_device(&mut self, bytes: usize) -> Result<(), String> {
        let total = self
            .memory_current
            .saturating_add(self.device_bytes)
            .saturating_add(bytes);
        if total > self.memory_limit {
            return Err(format!(
                "{} MiB more would take the engine past its {} MiB limit ({} MiB of memory, {} MiB \
                 of KV caches on the host)",
                bytes.div_ceil(1 << 20),
                self.memory_limit >> 20,
                self.memory_current >> 20,
                self.device_bytes >> 20
            ));
        }
        self.device_bytes += bytes;
        Ok(())
    }

    /// Gives back device memory taken by [`GuestLimits::charge_device`].
    pub(crate) fn release_device(&mut self, bytes: usize) {
        self.device_bytes = self.device_bytes.saturating_sub(bytes);
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Stops a running engine call from another thread (or a signal handler).
#[derive(Clone)]
pub struct InterruptHandle {
    engine: Engine,
    flag: Arc<AtomicBool>,
}

impl std::fmt::Debug for InterruptHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptHandle")
            .field("interrupted", &self.is_interrupted())
            .finish()
    }
}

impl InterruptHandle {
    /// Stops the running call (it returns [`Error::Cancelled`]) and refuses new ones until
    /// [`clear`](Self::clear). Only an atomic store and an atomic increment: safe from a signal
    /// handler.
    pub fn interrupt(&self) {
        self.flag.store(true, SeqCst);
        self.engine.increment_epoch();
    }

    /// Whether [`interrupt`](Self::interrupt) was called since the last [`clear`](Self::clear).
    pub fn is_interrupted(&self) -> bool {
        self.flag.load(SeqCst)
    }

    /// Allows calls again.
    pub fn clear(&self) {
        self.flag.store(false, SeqCst);
    }
}

/// Makes Ctrl-C (SIGINT, and SIGTERM) interrupt the running engine call. Call once per process.
pub fn install_ctrlc_handler(handle: InterruptHandle) -> Result<()> {
    // The process has one handler; a later runtime (e.g. `chord bench -t 1,2`) takes it over.
    static CURRENT: std::sync::Mutex<Option<InterruptHandle>> = std::sync::Mutex::new(None);
    let first = CURRENT
        .lock()
        .map_err(|_| Error::InvalidArgument("the Ctrl-C handler's lock is poisoned".into()))?
        .replace(handle)
        .is_none();
    if first {
        ctrlc::set_handler(|| {
            if let Ok(Some(h)) = CURRENT.lock().as_deref() {
                h.interrupt();
            }
        })
        .map_err(|e| Error::InvalidArgument(format!("cannot install the Ctrl-C handler: {e}")))?;
    }
    Ok(())
}

/// A model loaded in the engine. Give it back with [`Runtime::unload_model`].
#[derive(Debug)]
pub struct ModelHandle {
    resource: ResourceAny,
    name: String,
}

impl ModelHandle {
    /// The name the store knows the model's file by.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A session (a context with its KV cache) in the engine. End it with [`Runtime::end_session`].
#[derive(Debug)]
pub struct SessionHandle {
    resource: ResourceAny,
}

/// A generation running on a session. End it with [`Runtime::end_generation`] (or drain it).
#[derive(Debug)]
pub struct GenerationHandle {
    resource: ResourceAny,
}

// `bindgen!` generates the type; a derive cannot be added to just this one.
#[allow(clippy::derivable_impls)]
impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            context_length: None,
            keep_tokens: 0,
            batch_size: None,
            flash_attention: false,
        }
    }
}

impl Default for SamplerOptions {
    /// llama.cpp's defaults (`common_params_sampling`), no token limit, no stop strings.
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// One engine instance with its store.
pub struct Runtime {
    store: Store<Ctx>,
    world: bindings::Engine,
    blobs: Arc<BlobStore>,
    interrupt: InterruptHandle,
    stopped: bool,
    start: StartInfo,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("start", &self.start)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Compiles (or loads from the cache) and instantiates the embedded engine component.
    pub fn new(opts: RuntimeOptions) -> Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        configure_relaxed_simd(&mut config);
        // `CHORD_PERFMAP=1`: write /tmp/perf-PID.map so `perf` can name the guest's functions
        // (the compiled-code cache is skipped then: cached code has no map entries).
        let perfmap = std::env::var_os("CHORD_PERFMAP").is_some();
        if perfmap {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(wasmtime_error)?;

        let t = Instant::now();
        let (component, code, cache_file, cache_error) = compile_or_load(
            &engine,
            opts.guest_simd.wasm(),
            opts.cache_dir.as_deref().filter(|_| !perfmap),
        )?;
        let prepare = t.elapsed();

        let t = Instant::now();
        let mut linker: Linker<Ctx> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasmtime_error)?;
        bindings::Engine::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)
            .map_err(wasmtime_error)?;
        crate::store::add_zero_copy_read(&mut linker).map_err(wasmtime_error)?;

        let memory_limit = usize::try_from(opts.memory_limit).unwrap_or(usize::MAX);
        let blobs = Arc::new(BlobStore::new(opts.max_read_len));
        // The guest gets stderr (for panic messages) and WASI's clocks and random; no files, no
        // environment, no network: the store is its only way to data.
        let wasi = WasiCtx::builder().inherit_stderr().build();
        let cpu = match opts.cpu_threads {
            Some(t) => Some(crate::compute::cpu::CpuBackend::new(t)?),
            None => None,
        };
        let ctx = Ctx {
            table: ResourceTable::new(),
            wasi,
            blobs: blobs.clone(),
            cpu,
            cpu_programs: opts.cpu_programs,
            calls: ComputeCalls::default(),
            limits: GuestLimits {
                memory_limit,
                memory_peak: 0,
                memory_current: 0,
                device_bytes: 0,
                refused: false,
            },
        };
        let mut store = Store::new(&engine, ctx);
        store.limiter(|c| &mut c.limits);

        let flag = Arc::new(AtomicBool::new(false));
        let stop = flag.clone();
        store.epoch_deadline_callback(move |_| {
            Ok(if stop.load(SeqCst) {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        store.set_epoch_deadline(1);

        let world = bindings::Engine::instantiate(&mut store, &component, &linker)
            .map_err(wasmtime_error)?;
        let instantiate = t.elapsed();

        Ok(Runtime {
            store,
            world,
            blobs,
            interrupt: InterruptHandle { engine, flag },
            stopped: false,
            start: StartInfo {
                code,
                prepare,
                instantiate,
                cache_file,
                cache_error,
            },
        })
    }

    /// How this runtime started.
    pub fn start_info(&self) -> &StartInfo {
        &self.start
    }

    /// A handle that interrupts this runtime's calls from any thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.interrupt.clone()
    }

    /// The store's counters.
    pub fn store_stats(&self) -> StoreStats {
        self.blobs.stats()
    }

    /// The guest's `chord:compute` calls so far.
    pub fn compute_calls(&self) -> ComputeCalls {
        self.store.data().calls
    }

    /// The largest size the guest's linear memory has had, in bytes.
    pub fn guest_memory_peak(&self) -> u64 {
        self.store.data().limits.memory_peak as u64
    }

    /// Loads the GGUF at `path`: the file is registered in the store under the path as given, and
    /// the engine reads it through the store.
    pub fn load_model(&mut self, path: &Path, opts: &LoadOptions) -> Result<ModelHandle> {
        let name = path
            .to_str()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("model path {} is not UTF-8", path.display()))
            })?
            .to_owned();
        self.blobs.register(name.clone(), path);
        let options = wit_llm::LoadOptions {
            context_length: opts.context_length,
            cache_budget_bytes: opts.cache_budget_bytes,
            context_shift: opts.context_shift,
            prefetch_layers: opts.prefetch_layers,
        };
        let result = self.call(|store, world| {
            world
                .chord_llm_inference()
                .model()
                .call_load(store, &name, options)
        });
        match result {
            Ok(resource) => Ok(ModelHandle { resource, name }),
            Err(e) => {
                self.blobs.unregister(&name);
                Err(e)
            }
        }
    }

    /// Facts about a loaded model.
    pub fn model_info(&mut self, model: &ModelHandle) -> Result<ModelInfo> {
        let res = model.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .model()
                .call_info(store, res)
                .map(Ok)
        })
    }

    /// Text to tokens (the engine's `model.tokenize`).
    pub fn tokenize(
        &mut self,
        model: &ModelHandle,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let res = model.resource;
        self.call(|store, world| {
            world.chord_llm_inference().model().call_tokenize(
                store,
                res,
                text,
                add_special,
                parse_special,
            )
        })
    }

    /// Tokens to text (the engine's `model.detokenize`).
    pub fn detokenize(
        &mut self,
        model: &ModelHandle,
        tokens: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String> {
        let res = model.resource;
        self.call(|store, world| {
            world.chord_llm_inference().model().call_detokenize(
                store,
                res,
                tokens,
                remove_special,
                unparse_special,
            )
        })
    }

    /// One token's bytes (the engine's `model.token-to-piece`).
    pub fn token_to_piece(
        &mut self,
        model: &ModelHandle,
        token: u32,
        special: bool,
    ) -> Result<Vec<u8>> {
        let res = model.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .model()
                .call_token_to_piece(store, res, token, special)
        })
    }

    /// Renders `(role, content)` messages with the model's chat template, or with `template`.
    pub fn apply_chat_template(
        &mut self,
        model: &ModelHandle,
        messages: &[(String, String)],
        add_generation_prompt: bool,
        template: Option<&str>,
    ) -> Result<String> {
        let res = model.resource;
        let messages: Vec<wit_llm::ChatMessage> = messages
            .iter()
            .map(|(role, content)| wit_llm::ChatMessage {
                role: role.clone(),
                content: content.clone(),
            })
            .collect();
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .model()
                .call_apply_chat_template(store, res, &messages, add_generation_prompt, template)
        })
    }

    /// Opens a session on a model.
    pub fn new_session(
        &mut self,
        model: &ModelHandle,
        opts: &SessionOptions,
    ) -> Result<SessionHandle> {
        let res = model.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .model()
                .call_new_session(store, res, *opts)
        })
        .map(|resource| SessionHandle { resource })
    }

    /// Evaluates `prompt` after the session's tokens and starts sampling what follows.
    pub fn generate(
        &mut self,
        session: &SessionHandle,
        prompt: &[u32],
        opts: &SamplerOptions,
    ) -> Result<GenerationHandle> {
        let res = session.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .session()
                .call_generate(store, res, prompt, opts)
        })
        .map(|resource| GenerationHandle { resource })
    }

    /// The next generated token, or `None` once the generation has ended.
    pub fn next_token(&mut self, generation: &GenerationHandle) -> Result<Option<Token>> {
        let res = generation.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .generation()
                .call_next(store, res)
        })
    }

    /// Why the generation ended (`None` while it runs).
    pub fn finish_reason(&mut self, generation: &GenerationHandle) -> Result<Option<FinishReason>> {
        let res = generation.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .generation()
                .call_finish_reason(store, res)
                .map(Ok)
        })
    }

    /// Stops the generation; returns text it had held back.
    pub fn cancel(&mut self, generation: &GenerationHandle) -> Result<String> {
        let res = generation.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .generation()
                .call_cancel(store, res)
                .map(Ok)
        })
    }

    /// Token counts and timings of the generation.
    pub fn usage(&mut self, generation: &GenerationHandle) -> Result<Usage> {
        let res = generation.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .generation()
                .call_usage(store, res)
                .map(Ok)
        })
    }

    /// Frees a generation (the session can take other work again).
    pub fn end_generation(&mut self, generation: GenerationHandle) -> Result<()> {
        self.call(|store, _| generation.resource.resource_drop(store).map(Ok))
    }

    /// Appends tokens to the session's context without sampling.
    pub fn feed(&mut self, session: &SessionHandle, tokens: &[u32]) -> Result<()> {
        let res = session.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .session()
                .call_feed(store, res, tokens)
        })
    }

    /// Appends `tokens` and returns, per position, the top `top_k` logits, the log-sum-exp and
    /// the next token's logit.
    pub fn logits(
        &mut self,
        session: &SessionHandle,
        tokens: &[u32],
        top_k: u32,
    ) -> Result<Vec<PositionLogits>> {
        let res = session.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .session()
                .call_logits(store, res, tokens, top_k)
        })
    }

    /// Empties the session's context.
    pub fn reset(&mut self, session: &SessionHandle) -> Result<()> {
        let res = session.resource;
        self.call(|store, world| world.chord_llm_inference().session().call_reset(store, res))
    }

    /// Tokens in the session's context.
    pub fn session_len(&mut self, session: &SessionHandle) -> Result<u32> {
        let res = session.resource;
        self.call(|store, world| {
            world
                .chord_llm_inference()
                .session()
                .call_len(store, res)
                .map(Ok)
        })
    }

    /// Frees a session and its KV cache.
    pub fn end_session(&mut self, session: SessionHandle) -> Result<()> {
        self.call(|store, _| session.resource.resource_drop(store).map(Ok))
    }

    /// Frees a model in the engine (its sessions keep it alive until they end).
    pub fn unload_model(&mut self, model: ModelHandle) -> Result<()> {
        self.call(|store, _| model.resource.resource_drop(store).map(Ok))?;
        self.blobs.unregister(&model.name);
        Ok(())
    }

    /// Runs one call into the guest: refuses it after a crash or an interrupt, maps a trap to a
    /// host error, and a WIT error to [`Error`].
    fn call<R>(
        &mut self,
        f: impl FnOnce(
            &mut Store<Ctx>,
            &bindings::Engine,
        ) -> wasmtime::Result<std::result::Result<R, wit_llm::Error>>,
    ) -> Result<R> {
        if self.stopped {
            return Err(Error::EngineStopped);
        }
        if self.interrupt.is_interrupted() {
            return Err(Error::Cancelled);
        }
        // Any epoch bump from now on (an interrupt) reaches the deadline.
        self.store.set_epoch_deadline(1);
        match f(&mut self.store, &self.world) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(from_wit_error(e)),
            Err(e) => {
                self.stopped = true;
                let limits = &self.store.data().limits;
                Err(match from_trap(e) {
                    // An allocation the guest could not handle failing (the canonical ABI's, or
                    // an infallible one): for the user, simply too little memory.
                    Error::Trap { message, .. } if limits.refused => Error::OutOfMemory(format!(
                        "the engine needs more than the {} MiB limit ({message})",
                        limits.memory_limit >> 20
                    )),
                    e => e,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled-code cache.

/// Compiles `wasm`, or loads it from `<cache_dir>/compiled/` when a file compiled from the same
/// bytes by a compatible wasmtime for the same target and CPU features is there; writes the file
/// after compiling. Cache failures never fail the start; they are reported in the last element.
fn compile_or_load(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Component, CodeSource, Option<PathBuf>, Option<String>)> {
    let Some(dir) = cache_dir else {
        let c = Component::new(engine, wasm).map_err(wasmtime_error)?;
        return Ok((c, CodeSource::Compiled, None, None));
    };
    let dir = dir.join("compiled");
    let file = dir.join(format!("{}.cwasm", cache_key(engine, wasm)));
    let mut cache_error = None;
    if file.exists() {
        // SAFETY: wasmtime trusts a deserialized file to be its own output. This one is in the
        // user's own cache directory, written by `write_cache` below, and named by a hash that
        // covers the wasm bytes and the engine's compatibility hash; wasmtime also checks its
        // header and version. Anyone able to replace it can already run code as this user.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(c) => return Ok((c, CodeSource::Cache, Some(file), None)),
            Err(e) => cache_error = Some(format!("ignored {}: {e}", file.display())),
        }
    }
    let c = Component::new(engine, wasm).map_err(wasmtime_error)?;
    if let Err(e) = write_cache(&c, &dir, &file) {
        cache_error = Some(e);
    }
    Ok((c, CodeSource::Compiled, Some(file), cache_error))
}

/// Writes the compiled component atomically (temp file + rename), so a concurrent start never
/// reads half a file.
fn write_cache(c: &Component, dir: &Path, file: &Path) -> std::result::Result<(), String> {
    let bytes = c.serialize().map_err(|e| format!("serializing: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", file.display())
    })
}

/// SHA-256 over the wasm bytes, the host target, and wasmtime's compatibility hash (its version,
/// compiler settings and the CPU features it compiles for).
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0 // unused: the digest is read from the inner state
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    h.0.update(b"wasm-chord compiled engine v1\0");
    h.0.update(HOST_TARGET.as_bytes());
    h.0.update((wasm.len() as u64).to_le_bytes());
    h.0.update(wasm);
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Errors from the guest: all mapping here.

fn from_wit_error(e: wit_llm::Error) -> Error {
    use wit_llm::Error as W;
    match e {
        W::InvalidModel(m) => Error::InvalidModel(m),
        W::Unsupported(m) => Error::Unsupported(m),
        W::InvalidArgument(m) => Error::InvalidArgument(m),
        W::ContextFull(m) => Error::ContextFull(m),
        W::Store(m) => Error::Store(m),
        W::Compute(m) => Error::Compute(m),
        W::OutOfMemory(m) => Error::OutOfMemory(m),
        W::Cancelled(_) => Error::Cancelled,
    }
}

fn from_trap(e: wasmtime::Error) -> Error {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return Error::Cancelled;
        }
        return Error::Trap {
            message: trap.to_string(),
            detail: format!("{e:?}"),
        };
    }
    Error::Trap {
        message: first_line(&e.to_string()),
        detail: format!("{e:?}"),
    }
}

fn wasmtime_error(e: wasmtime::Error) -> Error {
    Error::Wasmtime(first_line(&format!("{e:#}")))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

//! `chord`: the wasm-chord command line.
use std::process::ExitCode;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use chord_engine::quant::GgmlType;
use chord_host::pull::{self, Cache, DEFAULT_MODEL, KNOWN_MODELS};
use chord_host::runtime::{MetadataValue, ModelInfo, install_ctrlc_handler};
use chord_host::synth::{SynthSpec, write_synth};
use chord_host::{
    FinishReason, GenerationHandle, GuestSimd, LoadOptions, ModelHandle, Runtime, RuntimeOptions,
    SamplerOptions, SessionHandle, SessionOptions,
};

/// wasm-chord: run quantized GGUF language models inside a WebAssembly component.
#[derive(Parser)]
#[command(name = "chord", version)]
struct Cli {
    /// Most memory the engine (the wasm guest) may hold: its linear memory plus the KV caches and
    /// forward-step buffers it keeps on the host's cpu backend; bytes, or with a K/M/G/T suffix.
    #[arg(long, global = true, default_value = "4G", value_parser = parse_bytes)]
    max_guest_memory: u64,
    /// Where the model's forward steps run: `cpu`, the host's native backend (a thread pool; the
    /// weights are read in place from the mapped file, the KV caches and activations stay on the
    /// host), or `guest`, the component's own SIMD kernels on one thread (with its weight cache,
    /// see --cache-budget).
    #[arg(long, global = true, default_value = "cpu", value_parser = ["cpu", "guest"])]
    backend: String,
    /// Threads of the cpu backend (0: one per core).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// Which build of the engine component runs: `relaxed` (relaxed SIMD: fused multiply-adds in
    /// the guest's kernels, the same results) or `portable` (simd128 only, the build browsers and
    /// plain component hosts get).
    #[arg(long, global = true, default_value = "relaxed", value_parser = ["relaxed", "portable"])]
    guest_simd: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model into the local cache (verified by sha256) and print its path.
    Pull(PullArgs),
    /// Show a model's architecture, hyperparameters, parameter count and tensor types.
    Info(InfoArgs),
    /// Generate text from a prompt (or stdin), streaming it to stdout; a timing line goes to stderr.
    Run(RunArgs),
    /// Chat interactively: one user turn per line of stdin; earlier turns stay in the context.
    Chat(ChatArgs),
    /// Score a token sequence: per position, the top logits and the log-sum-exp, as JSON lines.
    Logits(LogitsArgs),
    /// Perplexity of a text file, by llama-perplexity's method.
    Perplexity(PerplexityArgs),
    /// Prompt (pp) and generation (tg) speed, like llama-bench.
    Bench(BenchArgs),
    /// Tokenize TEXT (or all of stdin, verbatim) with a model's tokenizer and print the token ids.
    Tokenize(TokenizeArgs),
    /// Write a synthetic llama model with seeded random weights (for tests and benchmarks).
    Synth(SynthArgs),
}

#[derive(Args)]
struct InfoArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    model: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// The prompt; without it, stdin is read. Special-token text in it is parsed.
    #[arg(long, short)]
    prompt: Option<String>,
    /// Wrap the prompt in the model's chat template (as one user turn).
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
    /// One JSON object per line per token, then a summary object.
    #[arg(long)]
    json: bool,
    /// Add memory and store counters to the summary: guest memory high-water mark, bytes and
    /// reads served by the store, prefetched bytes used, the weight cache budget.
    #[arg(long)]
    stats: bool,
}

#[derive(Args)]
struct ChatArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// System message of the conversation.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
}

/// Sampling options shared by `run` and `chat` (llama.cpp's defaults).
#[derive(Args)]
struct SamplingArgs {
    /// Tokens to generate at most (per turn, for chat).
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: u32,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: u32,
    /// Keep the most likely tokens up to this probability mass (1: all).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this times the most likely one (0: none).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalise recently seen tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: u32,
    /// Subtracted per occurrence of a recent token.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Subtracted once for any recent token.
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Random seed (the same seed and options give the same text); default: a random one.
    #[arg(long)]
    seed: Option<u32>,
    /// Stop when this text is generated (repeatable); it is not printed.
    #[arg(long = "stop")]
    stops: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
}

impl SamplingArgs {
    fn options(&self) -> SamplerOptions {
        SamplerOptions {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias: Vec::new(),
            seed: self.seed.map(u64::from),
            max_tokens: Some(self.n_predict),
            stop: self.stops.clone(),
            ignore_eos: self.ignore_eos,
        }
    }
}

/// Context options shared by the commands that run the model.
#[derive(Args)]
struct ContextArgs {
    /// Context window in tokens.
    #[arg(long, default_value_t = 4096)]
    ctx: u32,
    /// When the context is full, drop the oldest tokens (after --keep) and go on.
    #[arg(long)]
    context_shift: bool,
    /// Tokens at the start that a context shift keeps.
    #[arg(long, default_value_t = 0)]
    keep: u32,
    /// Attend as llama.cpp's flash-attention path does (same mathematics, other roundings).
    #[arg(long)]
    flash_attn: bool,
    /// Most bytes of weights the engine keeps in its memory, reading the other layers from the
    /// store as it reaches them (e.g. 512MiB); default: all weights if they take at most 2 GiB,
    /// else 1 GiB.
    #[arg(long, value_parser = parse_bytes)]
    cache_budget: Option<u64>,
    /// Streamed layers ahead of the current one that the store reads ahead (0: none).
    #[arg(long, default_value_t = 1)]
    prefetch: u32,
}

#[derive(Args)]
struct LogitsArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// The token ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    tokens: Vec<u32>,
    /// Text to score instead of --tokens (special tokens added and parsed, as `run` does).
    #[arg(long, short)]
    prompt: Option<String>,
    /// How many of the largest logits to print per position.
    #[arg(long, default_value_t = 8)]
    top_k: u32,
    /// Attend as llama.cpp's flash-attention path does.
    #[arg(long)]
    flash_attn: bool,
    /// One JSON object per position: {"pos":i,"top":[[id,logit],...],"lse":x}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// Prompt tokens evaluated in one batch (0: skip the pp test).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: u32,
    /// Tokens generated one at a time (0: skip the tg test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: u32,
    /// Repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: u32,
    /// Thread counts of the cpu backend to test, comma-separated (the guest always runs one).
    #[arg(short = 't', value_delimiter = ',', default_value = "1")]
    thread_counts: Vec<u32>,
    /// Drive the cpu backend natively, without the component: the same kernels and threads, so
    /// the difference to a plain run is what the component's calls cost.
    #[arg(long)]
    native: bool,
    /// Weight cache budget (see `run --cache-budget`).
    #[arg(long, value_parser = parse_bytes)]
    cache_budget: Option<u64>,
    /// One JSON array of {"test","threads","backend","tok_s","stdev"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PerplexityArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: String,
    /// The text file.
    #[arg(long, short)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: u32,
    /// Tokens per forward step; default: what llama-perplexity's default batches give each
    /// chunk (ctx / 4, at most 512), which sets the same roundings.
    #[arg(long)]
    batch: Option<u32>,
    /// Attend with llama.cpp's plain path instead of its flash-attention path (which
    /// llama-perplexity uses by default on the CPU).
    #[arg(long)]
    no_flash_attn: bool,
    /// Print one JSON object: {"ppl":x,"tokens":n,"chunks":c,...}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TokenizeArgs {
    /// A .gguf path or a model name that `chord pull` knows.
    #[arg(long, short)]
    model: String,
    /// Do not add BOS/EOS even where the model's metadata asks for them.
    #[arg(long)]
    no_add_special: bool,
    /// Turn special-token text (e.g. `<|im_start|>`) into the special token.
    #[arg(long)]
    parse_special: bool,
    /// Print one JSON array on one line.
    #[arg(long)]
    json: bool,
    /// The text; without it, stdin is read verbatim (nothing stripped).
    text: Option<String>,
}

#[derive(Args)]
struct SynthArgs {
    /// Output .gguf path.
    #[arg(short, long)]
    output: std::path::PathBuf,
    /// Shape: llama-7b, llama-4g or llama-tiny; --n-* flags override its dimensions.
    #[arg(long, default_value = "llama-tiny")]
    preset: String,
    /// Tensor type of the matrices: Q4_0, Q4_1, Q8_0, F16 or F32.
    #[arg(long = "type", default_value = "Q8_0")]
    ty: String,
    /// Model (path or name) whose tokenizer is copied.
    #[arg(long, default_value = DEFAULT_MODEL)]
    vocab_from: String,
    /// Random seed: the same seed and shape give the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    n_embd: Option<u64>,
    #[arg(long)]
    n_layer: Option<u64>,
    #[arg(long)]
    n_ff: Option<u64>,
    #[arg(long)]
    n_head: Option<u64>,
    #[arg(long)]
    n_head_kv: Option<u64>,
}

#[derive(Args)]
struct PullArgs {
    /// A known model name (see --list) or the URL of a .gguf file.
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Expected sha256 of a URL's file (without it, the sha256 is computed and printed).
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// List the known models and whether each is cached.
    #[arg(long, conflicts_with_all = ["model", "sha256"])]
    list: bool,
    /// No messages or progress bar on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mem = HostOpts {
        memory: cli.max_guest_memory,
        cpu_threads: (cli.backend == "cpu").then_some(cli.threads),
        guest_simd: if cli.guest_simd == "portable" {
            GuestSimd::Portable
        } else {
            GuestSimd::Relaxed
        },
    };
    let result = match cli.command {
        Command::Pull(args) => pull(args),
        Command::Info(args) => info(args, mem),
        Command::Run(args) => run(args, mem),
        Command::Chat(args) => chat(args, mem),
        Command::Logits(args) => logits(args, mem),
        Command::Perplexity(args) => perplexity(args, mem),
        Command::Bench(args) => bench(args, mem),
        Command::Tokenize(args) => tokenize(args, mem),
        Command::Synth(args) => synth(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Whatever was printed is already flushed (every write is followed by a flush).
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<chord_host::Error>())
                .map_or(1, chord_host::Error::exit_code);
            if code == 130 {
                eprintln!("\nchord: interrupted");
            } else {
                eprintln!("chord: error: {e:#}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// `4G`, `512MiB`, `64k`, `1048576`: binary units, an optional `i`/`iB`/`B` after the letter.
fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let bad = || format!("`{s}` is not a size (e.g. 4G, 512MiB, 1048576)");
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err(format!("unknown size unit in `{s}` (use K, M, G or T)")),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("`{s}` is less than 1M, too little for any model"));
    }
    Ok(bytes)
}

fn pull(args: PullArgs) -> Result<()> {
    let cache = Cache::from_env()?.quiet(args.quiet);
    if args.list {
        println!("{:<24}{:>12}  {:<8}DESCRIPTION", "NAME", "SIZE", "CACHED");
        for model in KNOWN_MODELS {
            let cached = if cache.cached(model).is_some() {
                "yes"
            } else {
                "no"
            };
            let default = if model.name == DEFAULT_MODEL {
                " (default)"
            } else {
                ""
            };
            let size = indicatif::HumanBytes(model.size).to_string();
            println!(
                "{:<24}{size:>12}  {cached:<8}{}{default}",
                model.name, model.description
            );
        }
        println!("cache: {}", cache.root().display());
        return Ok(());
    }
    let pulled = cache.pull(&args.model, args.sha256.as_deref())?;
    if args.sha256.is_none() && pull::find_known(&args.model).is_none() && !args.quiet {
        eprintln!("sha256 {}", pulled.sha256);
    }
    println!("{}", pulled.path.display());
    Ok(())
}

/// How the engine is hosted: the global options.
#[derive(Clone, Copy)]
struct HostOpts {
    /// Most bytes of guest memory.
    memory: u64,
    /// The cpu backend's threads (0: all cores); `None`: the guest computes.
    cpu_threads: Option<usize>,
    /// Which build of the engine runs.
    guest_simd: GuestSimd,
}

/// The engine component with one model loaded: what every model command starts from.
struct Engine {
    rt: Runtime,
    model: ModelHandle,
    path: PathBuf,
}

impl Engine {
    /// Resolves `arg` (path, known name or URL), starts the component with `mem` bytes of guest
    /// memory at most, loads the model, and makes Ctrl-C interrupt the engine.
    fn open(arg: &str, mem: HostOpts, load: &LoadOptions) -> Result<Engine> {
        let path = pull::resolve_model(arg)?;
        let mut rt = Runtime::new(RuntimeOptions {
            memory_limit: mem.memory,
            cpu_threads: mem.cpu_threads,
            guest_simd: mem.guest_simd,
            ..RuntimeOptions::default()
        })?;
        install_ctrlc_handler(rt.interrupt_handle())?;
        let model = rt
            .load_model(&path, load)
            .with_context(|| path.display().to_string())?;
        Ok(Engine { rt, model, path })
    }

    /// Adds the model's path to an error of the engine.
    fn at<T>(&self, r: chord_host::Result<T>) -> Result<T> {
        r.with_context(|| self.path.display().to_string())
    }

    fn session(&mut self, opts: &SessionOptions) -> Result<SessionHandle> {
        let r = self.rt.new_session(&self.model, opts);
        self.at(r)
    }

    /// Text to tokens, special tokens added per metadata and special-token text parsed.
    fn tokenize(&mut self, text: &str) -> Result<Vec<u32>> {
        let r = self.rt.tokenize(&self.model, text, true, true);
        self.at(r)
    }
}

fn load_options(c: &ContextArgs) -> LoadOptions {
    LoadOptions {
        context_length: Some(c.ctx),
        context_shift: c.context_shift,
        cache_budget_bytes: c.cache_budget,
        prefetch_layers: c.prefetch,
    }
}

fn session_options(c: &ContextArgs) -> SessionOptions {
    SessionOptions {
        keep_tokens: c.keep,
        flash_attention: c.flash_attn,
        ..SessionOptions::default()
    }
}

fn info(args: InfoArgs, mem: HostOpts) -> Result<()> {
    let mut e = Engine::open(&args.model, mem, &LoadOptions::default())?;
    let i = e.rt.model_info(&e.model)?;
    let path = &e.path;
    let hparams = arch_hyperparameters(&i);
    let vocab = i.hyperparameters.vocab_size;
    if args.json {
        let v = serde_json::json!({
            "path": path,
            "architecture": i.architecture,
            "name": i.name,
            "gguf_version": i.gguf_version,
            "file_size": i.file_size,
            "parameters": i.parameter_count,
            "tensor_count": i.tensor_count,
            "tensor_types": i.tensor_types.iter().map(|t| (t.type_name.clone(), serde_json::Value::from(t.count))).collect::<serde_json::Map<_, _>>(),
            "hyperparameters": hparams.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "tokenizer": i.tokenizer_model,
            "tokenizer_pre": metadata_text(&i, "tokenizer.ggml.pre"),
            "vocab_size": vocab,
            "has_chat_template": i.has_chat_template,
        });
        println!("{v}");
        return Ok(());
    }
    println!("model:          {}", path.display());
    if let Some(name) = &i.name {
        println!("name:           {name}");
    }
    println!("architecture:   {}", i.architecture);
    println!("gguf version:   {}", i.gguf_version);
    println!(
        "file size:      {} ({} bytes)",
        indicatif::HumanBytes(i.file_size),
        i.file_size
    );
    println!(
        "parameters:     {} ({})",
        i.parameter_count,
        human_count(i.parameter_count)
    );
    let types: Vec<String> = i
        .tensor_types
        .iter()
        .map(|t| format!("{} x{}", t.type_name, t.count))
        .collect();
    println!("tensors:        {} ({})", i.tensor_count, types.join(", "));
    println!(
        "tokenizer:      {} (pre: {}), {vocab} tokens",
        i.tokenizer_model.as_deref().unwrap_or("none"),
        metadata_text(&i, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into()),
    );
    println!(
        "chat template:  {}",
        if i.has_chat_template { "yes" } else { "no" }
    );
    println!("hyperparameters:");
    for (k, v) in &hparams {
        println!("  {k:<40} {v}");
    }
    Ok(())
}

/// Every `{arch}.*` metadata key (prefix stripped) with its value as text.
fn arch_hyperparameters(i: &ModelInfo) -> Vec<(String, String)> {
    let prefix = format!("{}.", i.architecture);
    i.metadata
        .iter()
        .filter_map(|m| {
            let k = m.key.strip_prefix(&prefix)?;
            let v = match &m.value {
                MetadataValue::Uint(x) => x.to_string(),
                MetadataValue::Int(x) => x.to_string(),
                // f32 values print as f32 (1e-5, not 0.000009999999747378752).
                MetadataValue::Float(x) if m.gguf_type == "f32" => (*x as f32).to_string(),
                MetadataValue::Float(x) => x.to_string(),
                MetadataValue::Boolean(b) => b.to_string(),
                MetadataValue::Text(s) => format!("{s:?}"),
                MetadataValue::Array(a) => format!("[{}; {}]", a.element_type, a.len),
            };
            Some((k.to_owned(), v))
        })
        .collect()
}

fn metadata_text(i: &ModelInfo, key: &str) -> Option<String> {
    i.metadata
        .iter()
        .find(|m| m.key == key)
        .and_then(|m| match &m.value {
            MetadataValue::Text(s) => Some(s.clone()),
            _ => None,
        })
}

/// Streams one generation to stdout; returns why it ended and its usage.
fn stream(
    e: &mut Engine,
    g: &GenerationHandle,
    json: bool,
) -> Result<(FinishReason, chord_host::Usage, String)> {
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    while let Some(tok) = e.rt.next_token(g)? {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"id": tok.id, "text": tok.text})
            )?;
        } else {
            write!(out, "{}", tok.text)?;
        }
        out.flush()?;
        text.push_str(&tok.text);
    }
    let finish = e.rt.finish_reason(g)?.unwrap_or(FinishReason::MaxTokens);
    let usage = e.rt.usage(g)?;
    Ok((finish, usage, text))
}

/// `eos`, `length` or `stop`, as `chord run --json` reports it.
fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::StopToken => "eos",
        FinishReason::MaxTokens | FinishReason::ContextFull => "length",
        FinishReason::StopString => "stop",
        FinishReason::Cancelled => "cancelled",
    }
}

fn timing_line(u: &chord_host::Usage, finish: FinishReason) -> String {
    let rate = |n: u32, ms: f64| {
        if ms > 0.0 {
            f64::from(n) * 1e3 / ms
        } else {
            0.0
        }
    };
    format!(
        "prompt {} tokens in {:.0} ms ({:.1} tok/s), generated {} tokens in {:.0} ms ({:.1} tok/s), finish: {}",
        u.prompt_tokens,
        u.prefill_ms,
        rate(u.prompt_tokens, u.prefill_ms),
        u.completion_tokens,
        u.decode_ms,
        rate(u.completion_tokens.saturating_sub(1), u.decode_ms),
        finish_name(finish)
    )
}

fn run(args: RunArgs, mem: HostOpts) -> Result<()> {
    let prompt = match args.prompt {
        Some(p) => p,
        None => {
            std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?
        }
    };
    let mut e = Engine::open(&args.model, mem, &load_options(&args.context))?;
    let text = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(("system".to_owned(), system.clone()));
        }
        messages.push(("user".to_owned(), prompt));
        let r = e.rt.apply_chat_template(&e.model, &messages, true, None);
        e.at(r)?
    } else {
        prompt
    };
    // The session first: it loads the weights, so an unsupported architecture is reported as
    // such rather than as whatever the tokenizer trips on.
    let session = e.session(&session_options(&args.context))?;
    // Special tokens added per metadata, special-token text parsed: a pre-rendered template works.
    let ids = e.tokenize(&text)?;
    let g = e.rt.generate(&session, &ids, &args.sampling.options())?;
    let (finish, u, _) = stream(&mut e, &g, args.json)?;
    let mut summary = serde_json::json!({"done": true, "finish": finish_name(finish), "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "prefill_ms": u.prefill_ms, "decode_ms": u.decode_ms});
    let mut stats_line = String::new();
    if args.stats {
        let info = e.rt.model_info(&e.model)?;
        let st = e.rt.store_stats();
        let peak = e.rt.guest_memory_peak();
        let calls = e.rt.compute_calls();
        let extra = serde_json::json!({
            "guest_memory_peak_bytes": peak,
            "compute_calls": {"program_run": calls.program_run, "matmul": calls.matmul, "attend": calls.attend},
            "store_bytes_read": st.bytes_served,
            "store_reads": st.reads,
            "prefetch_bytes_used": st.prefetch_bytes_used,
            "cache_budget_bytes": info.cache_budget_bytes,
        });
        stats_line = format!(
            "guest memory peak {}, compute calls {} program runs + {} products + {} attentions, store served {} in {} reads, prefetched bytes used {}, weight cache budget {}",
            indicatif::HumanBytes(peak),
            calls.program_run,
            calls.matmul,
            calls.attend,
            indicatif::HumanBytes(st.bytes_served),
            st.reads,
            indicatif::HumanBytes(st.prefetch_bytes_used),
            info.cache_budget_bytes
                .map_or("none (all weights resident)".to_owned(), |b| {
                    indicatif::HumanBytes(b).to_string()
                }),
        );
        if let (Some(s), Some(x)) = (summary.as_object_mut(), extra.as_object()) {
            s.extend(x.clone());
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{summary}")?;
    } else {
        writeln!(out)?;
    }
    out.flush()?;
    eprintln!("{}", timing_line(&u, finish));
    if args.stats && !args.json {
        eprintln!("{stats_line}");
    }
    Ok(())
}

/// Interactive chat. Each turn sends only what is new since the context's last token: the
/// conversation is rendered whole with the template, and the part after the text already in the
/// context (the previous render plus the reply) is tokenized and evaluated. Where a template
/// rewrites earlier turns (so the old text is not a prefix), the context is rebuilt instead.
fn chat(args: ChatArgs, mem: HostOpts) -> Result<()> {
    use std::io::{BufRead as _, IsTerminal as _};
    let mut e = Engine::open(&args.model, mem, &load_options(&args.context))?;
    let session = e.session(&session_options(&args.context))?;
    let sampling = args.sampling.options();
    let mut messages: Vec<(String, String)> = Vec::new();
    if let Some(system) = &args.system {
        messages.push(("system".to_owned(), system.clone()));
    }
    // The text the context holds, as the template would render it.
    let mut in_context = String::new();
    let interactive = std::io::stdin().is_terminal();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let user = line.trim_end_matches(['\r', '\n']);
        match user.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                e.rt.reset(&session)?;
                messages.truncate(usize::from(args.system.is_some()));
                in_context.clear();
                continue;
            }
            _ => {}
        }
        messages.push(("user".to_owned(), user.to_owned()));
        let r = e.rt.apply_chat_template(&e.model, &messages, true, None);
        let rendered = e.at(r)?;
        let new_text = match rendered.strip_prefix(in_context.as_str()) {
            Some(rest) if !in_context.is_empty() => rest.to_owned(),
            _ => {
                e.rt.reset(&session)?;
                rendered.clone()
            }
        };
        // BOS only at the very start of the context.
        let add_special = e.rt.session_len(&session)? == 0;
        let r = e.rt.tokenize(&e.model, &new_text, add_special, true);
        let ids = e.at(r)?;
        let g = e.rt.generate(&session, &ids, &sampling)?;
        let (finish, u, reply) = stream(&mut e, &g, false)?;
        e.rt.end_generation(g)?;
        println!();
        eprintln!("{}", timing_line(&u, finish));
        if finish == FinishReason::ContextFull {
            eprintln!("chord: the context is full; /reset starts over (or use --context-shift)");
        }
        in_context = rendered + &reply;
        messages.push(("assistant".to_owned(), reply));
    }
    Ok(())
}

fn logits(args: LogitsArgs, mem: HostOpts) -> Result<()> {
    // A context just long enough: no KV cache for a window that is never used.
    let mut e = Engine::open(&args.model, mem, &LoadOptions::default())?;
    let tokens = match &args.prompt {
        Some(p) => e.tokenize(p)?,
        None => args.tokens.clone(),
    };
    if tokens.is_empty() {
        anyhow::bail!("no tokens to score");
    }
    let n = u32::try_from(tokens.len()).context("too many tokens")?;
    let session = e.session(&SessionOptions {
        context_length: Some(n),
        flash_attention: args.flash_attn,
        ..SessionOptions::default()
    })?;
    let rows = e.rt.logits(&session, &tokens, args.top_k)?;
    let mut out = std::io::stdout().lock();
    for (pos, p) in rows.iter().enumerate() {
        let top: Vec<(u32, f32)> = p.top.iter().map(|t| (t.id, t.logit)).collect();
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"pos": pos, "top": top, "lse": p.log_sum_exp})
            )?;
        } else {
            let top: Vec<String> = top.iter().map(|(i, l)| format!("{i}:{l:.4}")).collect();
            writeln!(
                out,
                "{pos:>5} lse {:>9.4}  {}",
                p.log_sum_exp,
                top.join(" ")
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// llama-perplexity's method (tools/perplexity/perplexity.cpp, `perplexity`): the whole file
/// tokenized with special tokens added per metadata; floor(n / ctx) chunks of ctx tokens, each
/// from position 0 in an empty context, its first token replaced by BOS where the model adds
/// one; the logits of the second half scored against the tokens that follow them.
fn perplexity(args: PerplexityArgs, mem: HostOpts) -> Result<()> {
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let ctx = args.ctx;
    if ctx < 4 {
        anyhow::bail!("--ctx must be at least 4");
    }
    let mut e = Engine::open(
        &args.model,
        mem,
        &LoadOptions {
            context_length: Some(ctx),
            ..LoadOptions::default()
        },
    )?;
    let info = e.rt.model_info(&e.model)?;
    let r = e.rt.tokenize(&e.model, &text, true, false);
    let tokens = e.at(r)?;
    let n_ctx = ctx as usize;
    if tokens.len() < 2 * n_ctx {
        anyhow::bail!(
            "{}: {} tokens; perplexity at --ctx {ctx} needs at least {} (2 x ctx)",
            args.file.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    // llama-perplexity puts 2048 / ctx chunks in a batch and its ubatches of 512 give each chunk
    // 512 / that many tokens per step.
    let batch = args.batch.unwrap_or((ctx / 4).clamp(1, 512));
    let session = e.session(&SessionOptions {
        context_length: Some(ctx),
        batch_size: Some(batch),
        flash_attention: !args.no_flash_attn,
        ..SessionOptions::default()
    })?;
    let bos = info
        .special_tokens
        .bos
        .filter(|_| info.special_tokens.add_bos);
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for (c, chunk) in tokens.chunks_exact(n_ctx).enumerate() {
        let mut chunk = chunk.to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        e.rt.reset(&session)?;
        // The first half only fills the cache; its logits are never scored.
        e.rt.feed(&session, &chunk[..first])?;
        let rows = e.rt.logits(&session, &chunk[first..], 0)?;
        for row in &rows[..rows.len() - 1] {
            let next = row
                .next_logit
                .context("the engine returned no logit for the next token")?;
            let v = f64::from(row.log_sum_exp) - f64::from(next);
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        if !args.json {
            eprint!("[{}]{:.4},", c + 1, (nll / count as f64).exp());
        }
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    // llama-perplexity's estimate of the standard error of the PPL.
    let var = (nll2 / count as f64 - mean * mean) / (count as f64 - 1.0).max(1.0);
    let err = ppl * var.max(0.0).sqrt();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"ppl": ppl, "ppl_error": err, "tokens": tokens.len(), "chunks": n_chunks, "ctx": ctx, "scored": count})
        );
    } else {
        eprintln!();
        println!("PPL = {ppl:.4} +/- {err:.4}");
    }
    Ok(())
}

/// What `bench` measures: the component, or the cpu backend driven natively.
enum BenchTarget {
    Component(Engine, SessionHandle),
    Native(chord_engine::model::Session),
}

impl BenchTarget {
    fn open(args: &BenchArgs, mem: HostOpts, ctx: u32) -> Result<(BenchTarget, u32, String)> {
        if !args.native {
            let mut e = Engine::open(
                &args.model,
                mem,
                &LoadOptions {
                    context_length: Some(ctx),
                    cache_budget_bytes: args.cache_budget,
                    ..LoadOptions::default()
                },
            )?;
            let vocab = e.rt.model_info(&e.model)?.hyperparameters.vocab_size;
            let session = e.session(&SessionOptions::default())?;
            let name = file_name(&e.path);
            return Ok((BenchTarget::Component(e, session), vocab, name));
        }
        use chord_engine::model::{Model, SessionOptions as NativeOptions};
        let Some(threads) = mem.cpu_threads else {
            anyhow::bail!(
                "--native drives the cpu backend; it cannot be used with --backend guest"
            );
        };
        let path = pull::resolve_model(&args.model)?;
        let file = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
        // SAFETY: read-only map of a model file nobody writes while chord runs (as the store).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.with_context(|| path.display().to_string())?;
        let src: chord_engine::model::SharedSource = Arc::new(file);
        let gguf =
            chord_engine::gguf::Gguf::read(&*src).with_context(|| path.display().to_string())?;
        let device = chord_host::compute::cpu::CpuBackend::new(threads)?.device(Arc::new(map));
        let model = Arc::new(
            Model::load_on(src, gguf, device).with_context(|| path.display().to_string())?,
        );
        let vocab = u32::try_from(model.hparams().n_vocab)?;
        let session = model.new_session(NativeOptions {
            n_ctx: ctx as usize,
            ..NativeOptions::default()
        })?;
        Ok((BenchTarget::Native(session), vocab, file_name(&path)))
    }

    fn reset(&mut self) -> Result<()> {
        match self {
            BenchTarget::Component(e, s) => e.rt.reset(s)?,
            BenchTarget::Native(s) => s.reset(),
        }
        Ok(())
    }

    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        match self {
            BenchTarget::Component(e, s) => e.rt.feed(s, tokens)?,
            BenchTarget::Native(s) => {
                s.eval(tokens, chord_engine::model::LogitsMode::Last)?;
            }
        }
        Ok(())
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map_or("?".into(), |f| f.to_string_lossy().into_owned())
}

/// llama-bench's two tests: `pp` evaluates `n_prompt` tokens as one batch in an empty context;
/// `tg` evaluates `n_gen` tokens one at a time (no sampling, as llama-bench). Each runs once to
/// warm up, then `repetitions` times; tok/s mean and standard deviation. Every thread count of
/// `-t` gets its own engine (the cpu backend's pool is made at start).
fn bench(args: BenchArgs, mem: HostOpts) -> Result<()> {
    if args.repetitions == 0 {
        anyhow::bail!("--repetitions must be at least 1");
    }
    if args.thread_counts.contains(&0) {
        anyhow::bail!("-t: thread counts must be at least 1");
    }
    let backend = if mem.cpu_threads.is_some() {
        "cpu"
    } else {
        "guest"
    };
    let ctx = (args.n_prompt.max(1) + args.n_gen).max(16);
    // The guest computes on one thread whatever -t says: one row set, threads = 1.
    let counts: Vec<u32> = if mem.cpu_threads.is_some() {
        args.thread_counts.clone()
    } else {
        vec![1]
    };
    let mut results = Vec::new();
    let mut model_name = String::new();
    for &threads in &counts {
        let h = HostOpts {
            cpu_threads: mem.cpu_threads.map(|_| threads as usize),
            ..mem
        };
        let (mut target, vocab, name) = BenchTarget::open(&args, h, ctx)?;
        model_name = name;
        // Deterministic ordinary tokens (not BOS/EOS: their ids are small or special).
        let vocab = vocab.max(2);
        let token = |i: u32| 1 + (i.wrapping_mul(2_654_435_761) % (vocab - 1));
        let mut tests = Vec::new();
        if args.n_prompt > 0 {
            tests.push((format!("pp{}", args.n_prompt), args.n_prompt, true));
        }
        if args.n_gen > 0 {
            tests.push((format!("tg{}", args.n_gen), args.n_gen, false));
        }
        for (name, n, batch) in tests {
            let prompt: Vec<u32> = (0..n).map(token).collect();
            let mut rates = Vec::new();
            for rep in 0..=args.repetitions {
                target.reset()?;
                let t0 = std::time::Instant::now();
                if batch {
                    target.feed(&prompt)?;
                } else {
                    for t in &prompt {
                        target.feed(std::slice::from_ref(t))?;
                    }
                }
                let secs = t0.elapsed().as_secs_f64();
                if rep > 0 {
                    rates.push(f64::from(n) / secs);
                }
            }
            let mean = rates.iter().sum::<f64>() / rates.len() as f64;
            let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
                / (rates.len().max(2) - 1) as f64;
            results.push((name, threads, mean, var.sqrt()));
        }
    }
    let backend = if args.native {
        format!("{backend}-native")
    } else {
        backend.to_string()
    };
    if args.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(test, threads, mean, sd)| serde_json::json!({"test": test, "threads": threads, "backend": backend, "tok_s": mean, "stdev": sd}))
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("| model | backend | threads | test | t/s |");
        println!("|---|---|---|---|---|");
        for (test, threads, mean, sd) in &results {
            println!("| {model_name} | {backend} | {threads} | {test} | {mean:.2} ± {sd:.2} |");
        }
    }
    Ok(())
}

fn tokenize(args: TokenizeArgs, mem: HostOpts) -> Result<()> {
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            String::from_utf8(buf).map_err(|_| anyhow::anyhow!("stdin is not valid UTF-8"))?
        }
    };
    let mut e = Engine::open(&args.model, mem, &LoadOptions::default())?;
    let r =
        e.rt.tokenize(&e.model, &text, !args.no_add_special, args.parse_special);
    let ids = e.at(r)?;
    if args.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
    }
    Ok(())
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n => format!("{:.1} K", n as f64 / 1e3),
    }
}

fn synth(args: SynthArgs) -> Result<()> {
    let ty = (0..64)
        .filter_map(GgmlType::from_u32)
        .find(|t| t.name().eq_ignore_ascii_case(&args.ty))
        .ok_or_else(|| anyhow::anyhow!("unknown tensor type `{}`", args.ty))?;
    let mut spec = SynthSpec::preset(&args.preset, ty, args.seed)?;
    spec.n_embd = args.n_embd.unwrap_or(spec.n_embd);
    spec.n_layer = args.n_layer.unwrap_or(spec.n_layer);
    spec.n_ff = args.n_ff.unwrap_or(spec.n_ff);
    spec.n_head = args.n_head.unwrap_or(spec.n_head);
    spec.n_head_kv = args.n_head_kv.unwrap_or(spec.n_head_kv);
    let vocab = pull::resolve_model(&args.vocab_from)?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let size = write_synth(&spec, &vocab, &args.output, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({})",
        args.output.display(),
        indicatif::HumanBytes(size)
    );
    println!("{}", args.output.display());
    Ok(())
}

//! `chord`: the wasm-chord command line.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use chord_engine::chat::{ChatTemplate, Message};
use chord_engine::generate::{Finish, GenerateOptions, Generation};
use chord_engine::gguf::Gguf;
use chord_engine::info::ModelSummary;
use chord_engine::model::{Model, SessionOptions};
use chord_engine::quant::GgmlType;
use chord_engine::sample::SamplerOptions;
use chord_engine::tokenizer::Tokenizer;
use chord_host::pull::{self, Cache, DEFAULT_MODEL, KNOWN_MODELS};
use chord_host::synth::{SynthSpec, write_synth};

/// wasm-chord: run quantized GGUF language models inside a WebAssembly component.
#[derive(Parser)]
#[command(name = "chord", version)]
struct Cli {
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
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n_predict: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: i32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed (the same seed and options give the same text).
    #[arg(long)]
    seed: Option<u32>,
    /// Stop when this text is generated (repeatable); it is not printed.
    #[arg(long = "stop")]
    stops: Vec<String>,
    /// Context window in tokens.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// One JSON object per line per token, then a summary object.
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
    let result = match cli.command {
        Command::Pull(args) => pull(args),
        Command::Info(args) => info(args),
        Command::Run(args) => run(args),
        Command::Tokenize(args) => tokenize(args),
        Command::Synth(args) => synth(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chord: error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

/// A model argument resolved to a file, opened, and its header parsed; errors name the file.
struct OpenModel {
    path: std::path::PathBuf,
    src: chord_engine::model::SharedSource,
    gguf: Gguf,
}

impl OpenModel {
    fn open(arg: &str) -> Result<Self> {
        let path = pull::resolve_model(arg)?;
        let file =
            std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let src: chord_engine::model::SharedSource = std::sync::Arc::new(file);
        let gguf = Gguf::read(&*src).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(OpenModel { path, src, gguf })
    }

    /// Prefixes an engine error with the model's path.
    fn at(&self, e: chord_engine::Error) -> anyhow::Error {
        anyhow::anyhow!("{}: {e}", self.path.display())
    }
}

fn info(args: InfoArgs) -> Result<()> {
    let m = OpenModel::open(&args.model)?;
    let (path, gguf) = (&m.path, &m.gguf);
    let s = ModelSummary::from_gguf(gguf).map_err(|e| m.at(e))?;
    if args.json {
        let v = serde_json::json!({
            "path": path,
            "architecture": s.architecture,
            "name": s.name,
            "gguf_version": s.gguf_version,
            "file_size": s.file_size,
            "parameters": s.parameters,
            "tensor_count": s.tensor_count,
            "tensor_types": s.tensor_types.iter().map(|(t, n)| (t.clone(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "hyperparameters": s.hyperparameters.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "tokenizer": s.tokenizer,
            "tokenizer_pre": s.tokenizer_pre,
            "vocab_size": s.vocab_size,
            "has_chat_template": s.has_chat_template,
        });
        println!("{v}");
        return Ok(());
    }
    println!("model:          {}", path.display());
    if let Some(name) = &s.name {
        println!("name:           {name}");
    }
    println!("architecture:   {}", s.architecture);
    println!("gguf version:   {}", s.gguf_version);
    println!(
        "file size:      {} ({} bytes)",
        indicatif::HumanBytes(s.file_size),
        s.file_size
    );
    println!(
        "parameters:     {} ({})",
        s.parameters,
        human_count(s.parameters)
    );
    let types: Vec<String> = s
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    println!("tensors:        {} ({})", s.tensor_count, types.join(", "));
    println!(
        "tokenizer:      {} (pre: {}), {} tokens",
        s.tokenizer.as_deref().unwrap_or("none"),
        s.tokenizer_pre.as_deref().unwrap_or("default"),
        s.vocab_size.map_or("?".into(), |n| n.to_string())
    );
    println!(
        "chat template:  {}",
        if s.has_chat_template { "yes" } else { "no" }
    );
    println!("hyperparameters:");
    for (k, v) in &s.hyperparameters {
        println!("  {k:<40} {v}");
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    use std::io::Write as _;
    let OpenModel { path, src, gguf } = OpenModel::open(&args.model)?;
    let prompt = match args.prompt {
        Some(p) => p,
        None => std::io::read_to_string(std::io::stdin())?,
    };
    let at = |e: chord_engine::Error| anyhow::anyhow!("{}: {e}", path.display());
    let tok = Tokenizer::from_gguf(&gguf).map_err(at)?;
    let text = if args.chat {
        let template = ChatTemplate::from_gguf(&gguf).map_err(at)?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::new("system", system.as_str()));
        }
        messages.push(Message::new("user", prompt.as_str()));
        let piece = |id: Option<u32>| {
            id.and_then(|i| tok.token_text(i).ok())
                .unwrap_or("")
                .to_string()
        };
        template.render(&messages, true, &piece(tok.bos()), &piece(tok.eos()))?
    } else {
        prompt
    };
    // Special tokens added per metadata, special-token text parsed: a pre-rendered template works.
    let ids = tok.tokenize(&text, true, true)?;
    let model = std::sync::Arc::new(Model::load(src.clone(), gguf).map_err(at)?);
    let mut session = model.new_session(SessionOptions {
        n_ctx: args.ctx,
        ..SessionOptions::default()
    })?;
    let mut sampler = SamplerOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        ..SamplerOptions::default()
    };
    if let Some(seed) = args.seed {
        sampler.seed = seed;
    }
    let opts = GenerateOptions {
        sampler,
        max_tokens: Some(args.n_predict),
        stops: args.stops,
    };
    let mut generation = Generation::new(&mut session, &tok, &ids, &opts)?;
    let mut out = std::io::stdout().lock();
    let mut finish = Finish::Length;
    while let Some(step) = generation.step()? {
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"id": step.id, "text": step.text})
            )?;
        } else {
            write!(out, "{}", step.text)?;
        }
        out.flush()?;
        if let Some(f) = step.finish {
            finish = f;
        }
    }
    let u = generation.usage();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"done": true, "finish": finish.as_str(), "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "prefill_ms": u.prefill_ms, "decode_ms": u.decode_ms})
        )?;
    } else {
        writeln!(out)?;
    }
    let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    eprintln!(
        "prompt {} tokens in {:.0} ms ({:.1} tok/s), generated {} tokens in {:.0} ms ({:.1} tok/s), finish: {}",
        u.prompt_tokens,
        u.prefill_ms,
        rate(u.prompt_tokens, u.prefill_ms),
        u.completion_tokens,
        u.decode_ms,
        rate(u.completion_tokens.saturating_sub(1), u.decode_ms),
        finish.as_str()
    );
    Ok(())
}

fn tokenize(args: TokenizeArgs) -> Result<()> {
    let m = OpenModel::open(&args.model)?;
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            String::from_utf8(buf).map_err(|_| anyhow::anyhow!("stdin is not valid UTF-8"))?
        }
    };
    let tok = Tokenizer::from_gguf(&m.gguf).map_err(|e| m.at(e))?;
    let ids = tok.tokenize(&text, !args.no_add_special, args.parse_special)?;
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

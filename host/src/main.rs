//! `chord`: the wasm-chord command line.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use chord_engine::gguf::Gguf;
use chord_engine::info::ModelSummary;
use chord_engine::quant::GgmlType;
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

fn info(args: InfoArgs) -> Result<()> {
    let path = pull::resolve_model(&args.model)?;
    let file =
        std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let gguf = Gguf::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let s =
        ModelSummary::from_gguf(&gguf).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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

//! `chord`: the wasm-chord command line.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use chord_host::pull::{self, Cache, DEFAULT_MODEL, KNOWN_MODELS};

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

//! Command-line arguments: a hand-written parser, since there are only a few flags and the
//! component should stay small.

use std::fmt::Write as _;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// Path of the GGUF file (inside a preopened directory).
    pub model: String,
    /// The prompt; special-token text in it is parsed.
    pub prompt: String,
    /// Tokens to generate at most.
    pub n_predict: u32,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Seed of the draw; `None`: a random one.
    pub seed: Option<u64>,
    /// Context length in tokens.
    pub ctx: u32,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Generate.
    Run(Args),
    /// Print [`usage`] and exit successfully.
    Help,
}

/// The help text.
pub fn usage() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Usage: chord-cli --model PATH --prompt TEXT [-n N] [--temperature T] [--seed S] [--ctx N]"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Generates a continuation of TEXT with the GGUF model at PATH and streams it to stdout."
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  -m, --model PATH      model file; under wasmtime it must lie in a --dir preopen"
    );
    let _ = writeln!(s, "  -p, --prompt TEXT     the prompt");
    let _ = writeln!(
        s,
        "  -n, --n-predict N     tokens to generate at most (default {})",
        DEFAULT_N
    );
    let _ = writeln!(
        s,
        "      --temperature T   sampling temperature, 0 is greedy (default {})",
        DEFAULT_TEMPERATURE
    );
    let _ = writeln!(s, "      --seed S          random seed (default: random)");
    let _ = writeln!(
        s,
        "      --ctx N           context length in tokens (default {})",
        DEFAULT_CTX
    );
    let _ = writeln!(s, "  -h, --help            this text");
    s
}

/// `chord run`'s defaults, so both give the same text for the same options.
const DEFAULT_N: u32 = 256;
const DEFAULT_TEMPERATURE: f32 = 0.8;
const DEFAULT_CTX: u32 = 4096;

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut model = None;
    let mut prompt = None;
    let mut n_predict = DEFAULT_N;
    let mut temperature = DEFAULT_TEMPERATURE;
    let mut seed = None;
    let mut ctx = DEFAULT_CTX;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // `--flag=value` and `--flag value` both work.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-m" | "--model" => model = Some(value("--model")?),
            "-p" | "--prompt" => prompt = Some(value("--prompt")?),
            "-n" | "--n-predict" => n_predict = number(&value("-n")?, "-n")?,
            "--temperature" => {
                let t: f32 = number(&value("--temperature")?, "--temperature")?;
                if !t.is_finite() || t < 0.0 {
                    return Err(format!("--temperature must be 0 or more, not {t}"));
                }
                temperature = t;
            }
            "--seed" => seed = Some(number(&value("--seed")?, "--seed")?),
            "--ctx" => {
                ctx = number(&value("--ctx")?, "--ctx")?;
                if ctx == 0 {
                    return Err("--ctx must be at least 1".into());
                }
            }
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    Ok(Parsed::Run(Args {
        model: model.ok_or("--model PATH is required")?,
        prompt: prompt.ok_or("--prompt TEXT is required")?,
        n_predict,
        temperature,
        seed,
        ctx,
    }))
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag}: {s:?} is not a valid number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_all_flags() {
        let got = p(&[
            "--model",
            "/models/m.gguf",
            "--prompt",
            "The capital of France is",
            "-n",
            "16",
            "--temperature=0",
            "--seed",
            "42",
            "--ctx",
            "512",
        ]);
        assert_eq!(
            got,
            Ok(Parsed::Run(Args {
                model: "/models/m.gguf".into(),
                prompt: "The capital of France is".into(),
                n_predict: 16,
                temperature: 0.0,
                seed: Some(42),
                ctx: 512,
            }))
        );
    }

    #[test]
    fn defaults_match_chord_run() {
        let Ok(Parsed::Run(a)) = p(&["-m", "x", "-p", "y"]) else {
            panic!()
        };
        assert_eq!(
            (a.n_predict, a.temperature, a.seed, a.ctx),
            (256, 0.8, None, 4096)
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(p(&["--help"]), Ok(Parsed::Help));
        assert!(p(&["--prompt", "x"]).unwrap_err().contains("--model"));
        assert!(p(&["--model", "x"]).unwrap_err().contains("--prompt"));
        assert!(
            p(&["-m", "x", "-p", "y", "-n"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            p(&["-m", "x", "-p", "y", "-n", "-3"])
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(p(&["-m", "x", "-p", "y", "--temperature", "-1"]).is_err());
        assert!(p(&["-m", "x", "-p", "y", "--temperature", "nan"]).is_err());
        assert!(p(&["-m", "x", "-p", "y", "--ctx", "0"]).is_err());
        assert!(
            p(&["-m", "x", "-p", "y", "--frobnicate"])
                .unwrap_err()
                .contains("unexpected")
        );
    }
}

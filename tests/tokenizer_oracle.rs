//! Differential test against llama.cpp itself: scripts/tokenizer-oracle/oracle.cpp (built against
//! llama.cpp's public API) tokenizes random texts with `llama_tokenize`, and reports every token's
//! attributes and pieces, the special ids, the end-of-generation set and `llama_detokenize` results;
//! everything must match. Needs that binary, so it is ignored by default:
//!   CHORD_LLAMA_ORACLE=/path/to/oracle cargo test -p chord-tests --release --test tokenizer_oracle -- --ignored

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use chord_engine::gguf::{Gguf, GgufWriter, Value};
use chord_engine::tokenizer::Tokenizer;

fn llama_vocab_dir() -> PathBuf {
    std::env::var_os("CHORD_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(chord_tests::llama_vocab_dir)
}

fn model_path(file: &str) -> PathBuf {
    match file {
        "SmolLM2-135M-Instruct.Q4_1.gguf" => chord_tests::model("smollm2-135m-instruct"),
        "gemma-3-270m-q4_k_m.gguf" => chord_tests::model("gemma3-270m"),
        other => panic!("no known model for {other}"),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "a",
    "the",
    " the",
    "Hello",
    " world",
    "WORLD",
    "'s",
    "'S",
    "'ll",
    "'Ve",
    "'re",
    "'t",
    "'",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    " \n",
    "\u{3000}",
    "\u{a0}",
    "0",
    "12",
    "345",
    "1234567",
    ".",
    ",",
    "!",
    "?",
    " ?",
    " ,",
    " 's",
    " ' ",
    "(",
    ")",
    "$",
    "+",
    "<",
    ">",
    "=",
    "^",
    "|",
    "~",
    "`",
    "-",
    "_",
    "@",
    "#",
    "%",
    "&",
    "*",
    "/",
    "\\",
    "\"",
    ";",
    ":",
    "é",
    "ñ",
    "ß",
    "Ω",
    "\u{301}",
    "e\u{301}",
    "\u{1F7D}",
    "\u{212A}",
    "µ",
    "ﬁ",
    "нещо",
    "مرحبا",
    "नमस्ते",
    "ไทย",
    "中文",
    "日本語",
    "こんにちは",
    "한국어",
    "𝔘𝔫𝔦",
    "🦙",
    "😶\u{200d}🌫\u{fe0f}",
    "✅",
    "\u{200b}",
    "\u{feff}",
    "\u{0}",
    "\u{85}",
    "\u{2028}",
    "\u{e000}",
    "▁",
    "▁▁",
];

/// Random text, with special-token texts of the vocabulary mixed in.
fn random_text(rng: &mut Rng, specials: &[String]) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(25) {
        match rng.below(30) {
            0 => {
                let c = ["a", " ", "\n", "1", "é", "▁", "ab", "中"][rng.below(8)];
                s.push_str(&c.repeat(40 + rng.below(120)));
            }
            1 | 2 if !specials.is_empty() => s.push_str(&specials[rng.below(specials.len())]),
            _ => s.push_str(PIECES[rng.below(PIECES.len())]),
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn check(oracle: &Path, model: &Path, n_cases: usize, seed: u64) -> Vec<String> {
    let name = model.file_name().unwrap().to_string_lossy().to_string();
    let tok = {
        let f = std::fs::File::open(model).unwrap();
        Tokenizer::from_gguf(&Gguf::read(&f).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let n = tok.n_vocab() as u32;
    let specials: Vec<String> = (0..n)
        .filter(|&i| tok.token_attr(i).unwrap().bits() & (1 | 8 | 16) != 0)
        .map(|i| tok.token_text(i).unwrap().to_string())
        .collect();
    let mut rng = Rng(seed);
    let mut cases = Vec::new();
    let mut file = Vec::new();
    for i in 0..n_cases {
        let text = random_text(&mut rng, &specials);
        let (add, parse) = (i % 2 == 1, i % 4 >= 2);
        file.push(u8::from(add));
        file.push(u8::from(parse));
        file.extend_from_slice(&(text.len() as u32).to_le_bytes());
        file.extend_from_slice(text.as_bytes());
        cases.push((text, add, parse));
    }
    let path = std::env::temp_dir().join(format!("chord-oracle-{}-{name}.bin", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let out = Command::new(oracle)
        .arg(model)
        .arg(&path)
        .output()
        .expect("run oracle");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{name}: oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let mut fails = Vec::new();

    let head: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let id = |v: Option<u32>| v.map_or(-1, |x| x as i64).to_string();
    let ours = [
        "vocab".to_string(),
        n.to_string(),
        "bos".into(),
        id(tok.bos()),
        "eos".into(),
        id(tok.eos()),
        "eot".into(),
        id(tok.eot()),
        "add_bos".into(),
        u8::from(tok.add_bos()).to_string(),
        "add_eos".into(),
        u8::from(tok.add_eos()).to_string(),
    ];
    if head != ours {
        fails.push(format!(
            "{name}: header\n  llama {head:?}\n  chord {ours:?}"
        ));
    }
    let eog: Vec<u32> = lines
        .next()
        .unwrap()
        .split(' ')
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    if eog != tok.eog_tokens() {
        fails.push(format!(
            "{name}: eog llama {eog:?} chord {:?}",
            tok.eog_tokens()
        ));
    }
    let attrs: Vec<u32> = lines
        .next()
        .unwrap()
        .split(' ')
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    for (i, &a) in attrs.iter().enumerate() {
        let ours = tok.token_attr(i as u32).unwrap().bits();
        if a != ours && fails.len() < 40 {
            fails.push(format!(
                "{name}: attr of {i} {:?}: llama {a:#x} chord {ours:#x}",
                tok.token_text(i as u32).unwrap()
            ));
        }
    }
    for i in 0..n {
        let line = lines.next().unwrap();
        let ours = format!(
            "piece {}|{}",
            hex(tok.token_to_piece(i, false).unwrap()),
            hex(tok.token_to_piece(i, true).unwrap())
        );
        if line != ours && fails.len() < 40 {
            fails.push(format!("{name}: piece of {i}: llama {line} chord {ours}"));
        }
    }
    for (text, add, parse) in &cases {
        let want: Vec<u32> = lines
            .next()
            .unwrap()
            .split(' ')
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        let got = tok.tokenize(text, *add, *parse).unwrap();
        if got != want {
            fails.push(format!(
                "{name}: {text:?} add {add} parse {parse}\n  llama {want:?}\n  chord {got:?}"
            ));
        }
        for special in [false, true] {
            let line = lines.next().unwrap();
            let ours = format!(
                "{} {}",
                if special { "detok_special" } else { "detok" },
                hex(&tok.detokenize_bytes(&want, false, special).unwrap())
            );
            if line != ours {
                fails.push(format!("{name}: detokenize {text:?} (special {special})\n  llama {line}\n  chord {ours}"));
            }
        }
    }
    eprintln!("{name}: {} cases, {} mismatches", cases.len(), fails.len());
    fails
}

#[test]
#[ignore = "needs a build of scripts/tokenizer-oracle (CHORD_LLAMA_ORACLE)"]
fn matches_llama_cpp() {
    let oracle =
        PathBuf::from(std::env::var_os("CHORD_LLAMA_ORACLE").expect("set CHORD_LLAMA_ORACLE"));
    let dir = llama_vocab_dir();
    let mut models: Vec<PathBuf> = [
        "aquila",
        "baichuan",
        "command-r",
        "deepseek-coder",
        "deepseek-llm",
        "falcon",
        "gemma-4",
        "gpt-2",
        "gpt-neox",
        "llama-bpe",
        "llama-spm",
        "mpt",
        "phi-3",
        "qwen2",
        "qwen35",
        "refact",
        "starcoder",
    ]
    .iter()
    .map(|n| dir.join(format!("ggml-vocab-{n}.gguf")))
    .filter(|p| p.is_file())
    .collect();
    models.extend(
        [
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "gemma-3-270m-q4_k_m.gguf",
        ]
        .iter()
        .map(|n| model_path(n))
        .filter(|p| p.is_file()),
    );
    let n_cases = std::env::var("CHORD_ORACLE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut fails = Vec::new();
    for (i, m) in models.iter().enumerate() {
        fails.extend(check(
            &oracle,
            m,
            n_cases,
            0x5DEE_CE66_D1CE_4E5B ^ (i as u64 + 1),
        ));
    }
    assert!(
        fails.is_empty(),
        "{} mismatches:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// Every pre-tokenizer this port implements, on the LLaMA 3 vocabulary with `tokenizer.ggml.pre`
/// rewritten: the expressions llama.cpp runs through std::regex (and this port through fancy-regex)
/// must split alike.
#[test]
#[ignore = "needs a build of scripts/tokenizer-oracle (CHORD_LLAMA_ORACLE)"]
fn every_pre_tokenizer_matches_llama_cpp() {
    let oracle =
        PathBuf::from(std::env::var_os("CHORD_LLAMA_ORACLE").expect("set CHORD_LLAMA_ORACLE"));
    let base = chord_tests::fixture("vocab").join("ggml-vocab-llama-bpe.gguf");
    let gguf = Gguf::read(&std::fs::File::open(&base).unwrap()).unwrap();
    let n_cases = std::env::var("CHORD_ORACLE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let mut fails = Vec::new();
    for (i, pre) in Tokenizer::supported_pre_tokenizers().iter().enumerate() {
        let mut w = GgufWriter::new();
        for (k, v) in gguf.metadata.iter() {
            if k != "tokenizer.ggml.pre" {
                w.kv(k, v.clone());
            }
        }
        w.kv("tokenizer.ggml.pre", Value::String(pre.to_string()));
        let path = std::env::temp_dir().join(format!(
            "chord-oracle-{}-pre-{pre}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, w.to_bytes()).unwrap();
        fails.extend(check(
            &oracle,
            &path,
            n_cases,
            0xA076_1D64_78BD_642F ^ (i as u64 + 1),
        ));
        let _ = std::fs::remove_file(&path);
    }
    assert!(
        fails.is_empty(),
        "{} mismatches:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

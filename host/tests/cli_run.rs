//! `chord run` against llama.cpp: greedy tokens of the dev fixtures, seeded sampling, and errors.
use std::process::{Command, Output};

fn chord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chord"))
        .args(args)
        .output()
        .unwrap()
}

fn model() -> String {
    chord_host::pull::resolve_model("smollm2-135m-instruct")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `chord run --temperature 0 -n 48 --json` reproduces llama.cpp's greedy tokens at least up to
/// the first position where llama.cpp's own top-1 margin is under 0.5.
#[test]
fn greedy_matches_llama_cpp() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/reference/smollm2_dev.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let model = model();
    for case in fx["cases"].as_array().unwrap().iter().take(4) {
        let prompt = case["prompt"].as_str().unwrap();
        let n_prompt = case["prompt_tokens"].as_array().unwrap().len();
        let want: Vec<u64> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let lines = json_lines(&chord(&[
            "run",
            "--model",
            &model,
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "-n",
            "48",
            "--json",
        ]));
        let done = lines.last().unwrap();
        assert_eq!(done["done"], true);
        assert_eq!(done["prompt_tokens"].as_u64().unwrap() as usize, n_prompt);
        let got: Vec<u64> = lines[..lines.len() - 1]
            .iter()
            .map(|l| l["id"].as_u64().unwrap())
            .collect();
        // The margin of llama.cpp's choice for greedy token k is at position n_prompt - 1 + k.
        let positions = case["positions"].as_array().unwrap();
        let clear = (0..want.len())
            .take_while(|&k| {
                let top = positions[n_prompt - 1 + k]["top"].as_array().unwrap();
                top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap() >= 0.5
            })
            .count();
        assert!(clear > 0);
        assert_eq!(
            got[..clear],
            want[..clear],
            "{prompt:?}: first {clear} greedy tokens differ"
        );
    }
}

#[test]
fn same_seed_same_text() {
    let model = model();
    let run = || {
        chord(&[
            "run",
            "--model",
            &model,
            "--prompt",
            "Once upon a time",
            "--temperature",
            "0.8",
            "--seed",
            "1234",
            "-n",
            "24",
        ])
        .stdout
    };
    let a = run();
    assert!(a.len() > 20);
    assert_eq!(a, run());
}

#[test]
fn prompt_longer_than_the_context_is_one_line_error() {
    let long = "word ".repeat(200);
    let out = chord(&[
        "run",
        "--model",
        &model(),
        "--prompt",
        &long,
        "--ctx",
        "64",
        "-n",
        "4",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("do not fit"), "{stderr}");
}

//! `chord run`: seeded sampling and errors (greedy against llama.cpp is in reference.rs).
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

//! `chord run`: seeded sampling (greedy against llama.cpp is in reference.rs, errors in
//! cli_errors.rs).
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

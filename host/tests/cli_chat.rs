//! `chord chat` (multi-turn, earlier turns kept in the KV cache) and Ctrl-C during `chord run`.
use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn smollm2() -> String {
    chord_host::pull::resolve_model("smollm2-135m-instruct")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The prompt token counts of each turn, from the timing lines on stderr.
fn prompt_tokens(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("prompt "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn chat_keeps_earlier_turns_in_the_context() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chord"))
        .args([
            "chat",
            "--model",
            &smollm2(),
            "--temperature",
            "0",
            "-n",
            "24",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"What is the capital of France? Answer in one sentence.\n\
              What is the capital of Italy? Answer in one sentence.\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Paris"), "{stdout}");
    assert!(stdout.contains("Rome"), "{stdout}");
    let turns = prompt_tokens(&stderr);
    assert_eq!(turns.len(), 2, "{stderr}");
    // The second turn evaluates only its own text (the end of the reply, the user's line and the
    // assistant header), not the system prompt and first exchange again.
    assert!(turns[1] < 30 && turns[1] < turns[0], "{turns:?}");
}

#[test]
fn ctrl_c_stops_a_generation_with_exit_130() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chord"))
        .args([
            "run",
            "--model",
            &smollm2(),
            "--prompt",
            "Once upon a time",
            "--temperature",
            "0",
            "--ignore-eos",
            "-n",
            "4000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Wait for the first generated text, then interrupt.
    let mut first = [0u8; 16];
    let n = stdout.read(&mut first).unwrap();
    assert!(n > 0);
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // What was generated before the interrupt was flushed, and it stopped well before 4000 tokens.
    let text = [&first[..n], &rest].concat();
    assert!(text.len() >= n);
    assert!(text.len() < 4000, "{} bytes", text.len());
}

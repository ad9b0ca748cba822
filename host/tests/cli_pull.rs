//! The `chord pull` command line: stdout carries only the path, errors are one line on stderr,
//! and nothing is drawn when stderr is not a terminal. Uses temp caches and `file://` URLs only;
//! real PyPI pulls are tested in the `chord-tests` crate.
use std::path::Path;
use std::process::{Command, Output};

fn chord(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chord"))
        .arg("pull")
        .args(args)
        .env("CHORD_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn pull_url_prints_path_and_sha256() {
    let src = tempfile::tempdir().unwrap();
    let model = src.path().join("m.gguf");
    std::fs::write(&model, b"GGUF-and-some-bytes").unwrap();
    let url = format!("file://{}", model.display());
    let cache = tempfile::tempdir().unwrap();

    let out = chord(cache.path(), &[&url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let path = stdout.strip_suffix('\n').unwrap();
    assert!(!path.contains('\n'));
    assert!(Path::new(path).starts_with(cache.path()));
    assert_eq!(std::fs::read(path).unwrap(), b"GGUF-and-some-bytes");
    let sha: String = <sha2::Sha256 as sha2::Digest>::digest(b"GGUF-and-some-bytes")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stderr = text(&out.stderr);
    // Not a terminal: messages, but no progress bar redraws.
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    let printed = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap()
        .to_owned();
    assert_eq!(printed, sha);

    // The printed digest verifies; --quiet silences stderr.
    let out = chord(cache.path(), &["--quiet", "--sha256", &printed, &url]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), stdout);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn errors_are_one_line_and_fail() {
    let cache = tempfile::tempdir().unwrap();
    let out = chord(cache.path(), &["no-such-model"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("chord: error: unknown model `no-such-model`"),
        "{stderr}"
    );
    assert!(stderr.contains("smollm2-135m-instruct") && stderr.contains("gemma3-270m"));

    let src = tempfile::tempdir().unwrap();
    let model = src.path().join("m.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let url = format!("file://{}", model.display());
    let out = chord(cache.path(), &["--sha256", &"ab".repeat(32), &url]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("chord: error: ") && last.contains("sha256 mismatch"),
        "{stderr}"
    );
}

#[test]
fn list_shows_known_models_and_cache_state() {
    let cache = tempfile::tempdir().unwrap();
    let out = chord(cache.path(), &["--list"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    assert!(row("smollm2-135m-instruct ").contains(" no "), "{stdout}");
    assert!(
        row("smollm2-135m-instruct ").contains("(default)"),
        "{stdout}"
    );
    assert!(row("gemma3-270m ").contains(" no "), "{stdout}");
    assert!(stdout.contains(&cache.path().display().to_string()));

    // A file of the right size in the right place counts as cached (hashing waits for use).
    let models = cache.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let f = std::fs::File::create(models.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    f.set_len(98_362_432).unwrap();
    let stdout = text(&chord(cache.path(), &["--list"]).stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("smollm2-135m-instruct "))
        .unwrap();
    assert!(row.contains(" yes "), "{stdout}");
}

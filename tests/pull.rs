//! `chord pull`'s library: real pulls from PyPI into the default cache (each model downloaded
//! at most once, ever, per machine), and the error paths, cheaply, in temp caches.
use std::fs;
use std::io::Read;
use std::path::Path;

use chord_host::Error;
use chord_host::pull::{Cache, DEFAULT_MODEL, KNOWN_MODELS, find_known, resolve_model};
use chord_tests::{llama_vocab_dir, model};
use sha2::{Digest, Sha256};

fn sha256_of(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn magic(path: &Path) -> [u8; 4] {
    let mut m = [0u8; 4];
    fs::File::open(path).unwrap().read_exact(&mut m).unwrap();
    m
}

/// Files in `dir` whose names end in `.part` (temp downloads that should not outlive a pull).
fn temps(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

/// A small file that looks like a GGUF model, and its `file://` URL.
fn fake_gguf(dir: &Path, name: &str, len: usize) -> (String, String) {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..len).map(|i| (i * 7 + i / 251) as u8));
    let path = dir.join(name);
    fs::write(&path, &bytes).unwrap();
    let sha = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (format!("file://{}", path.display()), sha)
}

#[test]
fn known_models_pull_from_pypi_and_verify() {
    let cache = Cache::from_env().unwrap();
    for known in KNOWN_MODELS {
        let path = model(known.name);
        assert_eq!(path, cache.model_path(known));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            known.size,
            "{}",
            known.name
        );
        assert_eq!(&magic(&path), b"GGUF", "{}", known.name);
        // Hashed here independently of the pull code's own check.
        assert_eq!(sha256_of(&path), known.sha256, "{}", known.name);
        assert_eq!(cache.cached(known), Some(path.clone()));
        // Pulling again is a cache hit.
        let again = cache.pull(known.name, None).unwrap();
        assert_eq!((again.path, again.downloaded), (path, false));
        assert_eq!(again.sha256, known.sha256);
    }
    assert_eq!(
        find_known(DEFAULT_MODEL).unwrap().name,
        "smollm2-135m-instruct"
    );
}

#[test]
fn resolve_model_takes_paths_and_names() {
    let smollm = model(DEFAULT_MODEL);
    assert_eq!(resolve_model(DEFAULT_MODEL).unwrap(), smollm);
    assert_eq!(resolve_model(smollm.to_str().unwrap()).unwrap(), smollm);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path()).quiet(true);
    match cache.resolve_model("no-such-model") {
        Err(Error::UnknownModel { name, known }) => {
            assert_eq!(name, "no-such-model");
            assert!(known.contains("smollm2-135m-instruct") && known.contains("gemma3-270m"));
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
    let missing = dir.path().join("missing.gguf");
    let err = cache.resolve_model(missing.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[test]
fn llama_vocab_files_come_from_the_sdist() {
    let dir = llama_vocab_dir();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    assert!(
        names.iter().all(|n| n.starts_with("ggml-vocab-")),
        "{names:?}"
    );
    let ggufs: Vec<&String> = names.iter().filter(|n| n.ends_with(".gguf")).collect();
    // The pinned release ships 19 vocabularies, 15 of them with .inp/.out test pairs.
    assert_eq!((ggufs.len(), names.len()), (19, 19 + 2 * 15), "{names:?}");
    for needed in [
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-gpt-2.gguf",
    ] {
        for suffix in ["", ".inp", ".out"] {
            let name = format!("{needed}{suffix}");
            assert!(names.contains(&name), "{name} missing");
        }
    }
    for gguf in &ggufs {
        assert_eq!(&magic(&dir.join(gguf)), b"GGUF", "{gguf}");
    }
    // Every test input has its expected output.
    for inp in names.iter().filter(|n| n.ends_with(".inp")) {
        let out = format!("{}.out", inp.trim_end_matches(".inp"));
        assert!(names.contains(&out), "{out} missing");
    }
    let llama_spm = dir.join("ggml-vocab-llama-spm.gguf");
    assert_eq!(fs::metadata(&llama_spm).unwrap().len(), 723_869);
    // A second call is a cache hit returning the same directory.
    let cache = Cache::from_env().unwrap();
    let again = cache
        .fetch_sdist_files(
            "llama-cpp-python",
            "0.3.36",
            "vendor/llama.cpp/models",
            "ggml-vocab-*",
        )
        .unwrap();
    assert_eq!(again, dir);
}

#[test]
fn unknown_name_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cache::at(dir.path())
        .quiet(true)
        .pull("llama-7b", None)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownModel { .. }), "{err:?}");
    assert!(
        msg.contains("llama-7b") && msg.contains("smollm2-135m-instruct, gemma3-270m"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn bad_urls_fail_clearly_and_cache_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path()).quiet(true);
    // 404 from a real server: not retried, reported with the status.
    let err = cache
        .pull("https://pypi.org/no/such/file/model.gguf", None)
        .unwrap_err();
    assert!(
        matches!(err, Error::Http { .. }) && err.to_string().contains("404"),
        "{err}"
    );
    // A host that cannot exist (RFC 2606).
    let err = cache
        .pull("https://no-such-host.invalid/model.gguf", None)
        .unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err}");
    // Malformed: not a .gguf, unsupported scheme, bad digest.
    for (url, sha) in [
        ("https://pypi.org/simple/", None),
        ("ftp://example.com/model.gguf", None),
        ("https://example.com/model.gguf", Some("abc")),
    ] {
        let err = cache.pull(url, sha).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{url}: {err:?}");
    }
    // A known name does not take a sha256.
    assert!(cache.pull(DEFAULT_MODEL, Some(&"0".repeat(64))).is_err());
    let models: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| !is_hidden(p))
        .collect();
    assert!(models.is_empty(), "{models:?}");
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().unwrap().to_string_lossy().starts_with('.')
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn hash_mismatch_deletes_the_download() {
    let src = tempfile::tempdir().unwrap();
    let (url, sha) = fake_gguf(src.path(), "m.gguf", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path()).quiet(true);
    let wrong = "0".repeat(64);
    match cache.pull(&url, Some(&wrong)) {
        Err(Error::Integrity {
            kind,
            expected,
            actual,
            ..
        }) => {
            assert_eq!((kind, expected, actual), ("sha256", wrong, sha));
        }
        other => panic!("expected a sha256 mismatch, got {other:?}"),
    }
    let files = walk(dir.path());
    assert!(
        files
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "lock")),
        "{files:?}"
    );
}

#[test]
fn url_pull_verifies_caches_and_repairs() {
    let src = tempfile::tempdir().unwrap();
    let (url, sha) = fake_gguf(src.path(), "tiny model.gguf", 300_000);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path()).quiet(true);

    // Without a digest: downloaded, and the computed sha256 returned.
    let first = cache.pull(&url, None).unwrap();
    assert!(first.downloaded);
    assert_eq!(first.sha256, sha);
    assert_eq!(first.path.file_name().unwrap(), "tiny_model.gguf");
    assert!(first.path.starts_with(dir.path()));
    assert_eq!(sha256_of(&first.path), sha);
    assert!(temps(first.path.parent().unwrap()).is_empty());

    // With the digest (any case): a cache hit.
    let again = cache.pull(&url, Some(&sha.to_uppercase())).unwrap();
    assert_eq!((&again.path, again.downloaded), (&first.path, false));

    // A truncated cache file is noticed by its size and fetched again.
    fs::write(&first.path, b"GGUF").unwrap();
    let repaired = cache.pull(&url, Some(&sha)).unwrap();
    assert!(repaired.downloaded);
    assert_eq!(sha256_of(&repaired.path), sha);
}

#[test]
fn non_gguf_downloads_are_not_cached() {
    let src = tempfile::tempdir().unwrap();
    let page = src.path().join("page.gguf");
    fs::write(&page, b"<!doctype html><p>Not Found</p>").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Cache::at(dir.path())
        .quiet(true)
        .pull(&format!("file://{}", page.display()), None)
        .unwrap_err();
    assert!(
        matches!(err, Error::Archive { .. }) && err.to_string().contains("GGUF"),
        "{err}"
    );
    let files = walk(dir.path());
    assert!(
        files
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "lock")),
        "{files:?}"
    );
}

#[test]
fn concurrent_pulls_download_once() {
    let src = tempfile::tempdir().unwrap();
    let (url, sha) = fake_gguf(src.path(), "shared.gguf", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    Cache::at(dir.path())
                        .quiet(true)
                        .pull(&url, Some(&sha))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|p| p.downloaded).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|p| p.path == results[0].path && p.sha256 == sha)
    );
    assert_eq!(sha256_of(&results[0].path), sha);
}

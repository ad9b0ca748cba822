//! The on-disk cache: where files go, cross-process locks, and verification markers.
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::hex;
use super::net::Progress;
use crate::error::{Error, Result};

/// The cache root: `$CHORD_CACHE_DIR` if set, else the platform cache dir
/// (`$XDG_CACHE_HOME`, else `~/.cache` on Linux) + `wasm-chord`.
pub fn default_cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CHORD_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("wasm-chord"))
        .ok_or(Error::NoCacheDir)
}

pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io(dir))
}

/// An exclusive advisory lock on one cache entry, held until dropped. Processes (and threads:
/// each lock is its own open file) fetching the same entry wait for each other.
#[derive(Debug)]
pub(crate) struct EntryLock {
    _file: File,
}

/// Locks the entry `key` in `dir`, waiting (with a message) while another holder works.
pub(crate) fn lock(dir: &Path, key: &str, progress: Progress) -> Result<EntryLock> {
    create_dir(dir)?;
    let path = dir.join(format!(".{key}.lock"));
    // The lock file is never deleted: deleting it would let two processes lock different files.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            progress.say(&format!("waiting for another process fetching {key}"));
            file.lock().map_err(Error::io(&path))?;
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
    }
    // Holding the lock, no one else writes this entry: temp files left for it are debris of a
    // killed process.
    remove_stale_temps(dir, key);
    Ok(EntryLock { _file: file })
}

/// Prefix of the temp files (and dirs) for entry `key`; they end in `.part`.
pub(crate) fn temp_prefix(key: &str) -> String {
    format!(".{key}.")
}

fn remove_stale_temps(dir: &Path, key: &str) {
    let prefix = temp_prefix(key);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(".part") {
            let path = entry.path();
            // Best effort: a leftover that cannot be removed only wastes space.
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// sha256 and size of a file, streamed.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path)(e)),
        };
        hasher.update(&buf[..n]);
        size = size.saturating_add(n as u64);
    }
    Ok((hex(&hasher.finalize()), size))
}

/// The marker recording that `path` was hashed once: `<sha256> <size>`.
fn marker_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.verified"))
}

fn read_marker(path: &Path) -> Option<(String, u64)> {
    let text = fs::read_to_string(marker_path(path)).ok()?;
    let (sha, size) = text.trim().split_once(' ')?;
    Some((sha.to_owned(), size.parse().ok()?))
}

/// Records that `path` has been verified to have this sha256 and size.
pub(crate) fn write_marker(path: &Path, sha256: &str, size: u64) -> Result<()> {
    let marker = marker_path(path);
    fs::write(&marker, format!("{sha256} {size}\n")).map_err(Error::io(&marker))
}

/// The sha256 of `path` if a marker says it was verified and its size still matches (and
/// matches `sha256` when given). Read-only and lock-free: the marker is written only after the
/// file is in place, so this is the fast path for cache hits (and works on read-only caches).
pub(crate) fn verified(path: &Path, sha256: Option<&str>) -> Option<String> {
    let (marked_sha, marked_size) = read_marker(path)?;
    let meta = fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() == marked_size && sha256.is_none_or(|s| s == marked_sha))
        .then_some(marked_sha)
}

/// Deletes a cache file and its marker.
pub(crate) fn remove_entry(path: &Path) -> Result<()> {
    let _ = fs::remove_file(marker_path(path));
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path)(e)),
        _ => Ok(()),
    }
}

/// Checks a cached file. Returns its sha256 when it is present and good; deletes it (and
/// returns `None`) when it is damaged. The size is checked every time; the sha256 only the
/// first time, after which a marker records it.
pub(crate) fn check_cached(
    path: &Path,
    sha256: Option<&str>,
    size: Option<u64>,
    progress: Progress,
) -> Result<Option<String>> {
    let actual_size = match fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return Err(Error::InvalidArgument(format!(
                "{} is in the cache's way and is not a file; remove it",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path)(e)),
    };
    let damaged = |why: String| -> Result<Option<String>> {
        progress.say(&format!(
            "cached {} is damaged ({why}); fetching it again",
            path.display()
        ));
        remove_entry(path)?;
        Ok(None)
    };
    if let Some(size) = size.filter(|&s| s != actual_size) {
        return damaged(format!("{actual_size} bytes, expected {size}"));
    }
    if let Some(marked_sha) = verified(path, sha256) {
        return Ok(Some(marked_sha));
    }
    let (actual_sha, _) = hash_file(path)?;
    if let Some(sha) = sha256.filter(|&s| s != actual_sha) {
        return damaged(format!("sha256 {actual_sha}, expected {sha}"));
    }
    write_marker(path, &actual_sha, actual_size)?;
    Ok(Some(actual_sha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    const QUIET: Progress = Progress {
        messages: false,
        bar: false,
    };

    #[test]
    fn lock_makes_a_second_holder_wait() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), "entry", QUIET).unwrap();
        let (tx, rx) = mpsc::channel();
        let path = dir.path().to_owned();
        let waiter = std::thread::spawn(move || {
            let second = lock(&path, "entry", QUIET).unwrap();
            tx.send(()).unwrap();
            drop(second);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second lock was granted while the first was held"
        );
        // A different entry is not blocked.
        drop(lock(dir.path(), "other", QUIET).unwrap());
        drop(first);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the second lock was never granted");
        waiter.join().unwrap();
    }

    #[test]
    fn lock_removes_stale_temps_of_its_entry_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".entry.abc.part"), b"x").unwrap();
        fs::create_dir(dir.path().join(".entry.dir.part")).unwrap();
        fs::write(dir.path().join(".other.abc.part"), b"x").unwrap();
        let _l = lock(dir.path(), "entry", QUIET).unwrap();
        assert!(!dir.path().join(".entry.abc.part").exists());
        assert!(!dir.path().join(".entry.dir.part").exists());
        assert!(dir.path().join(".other.abc.part").exists());
    }

    #[test]
    fn check_cached_verifies_then_trusts_the_marker_and_catches_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        assert_eq!(check_cached(&path, None, None, QUIET).unwrap(), None);
        fs::write(&path, b"hello").unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(
            check_cached(&path, Some(sha), Some(5), QUIET)
                .unwrap()
                .as_deref(),
            Some(sha)
        );
        assert_eq!(read_marker(&path), Some((sha.to_owned(), 5)));
        // Same size, different bytes: the marker is trusted (that is its purpose)...
        fs::write(&path, b"HELLO").unwrap();
        assert_eq!(
            check_cached(&path, Some(sha), Some(5), QUIET)
                .unwrap()
                .as_deref(),
            Some(sha)
        );
        // ...but a size change is caught and the file deleted.
        fs::write(&path, b"hello!").unwrap();
        assert_eq!(
            check_cached(&path, Some(sha), Some(5), QUIET).unwrap(),
            None
        );
        assert!(!path.exists());
        // Without a marker, a wrong hash is caught and the file deleted.
        fs::write(&path, b"HELLO").unwrap();
        assert_eq!(
            check_cached(&path, Some(sha), Some(5), QUIET).unwrap(),
            None
        );
        assert!(!path.exists());
    }
}

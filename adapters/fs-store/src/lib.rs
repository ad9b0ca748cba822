//! The `chord:memory64-store` interface over files: a blob's name is a file path, read at 64-bit
//! offsets.
//!
//! Built for wasm32-wasip2 this crate is a component exporting `chord:memory64-store/store`
//! ([`wit_glue`], wasm32 only): Rust's `std::fs` there is `wasi:filesystem`, so the paths a guest
//! can open are those under the directories its host preopened (`wasmtime run --dir`). A missing
//! file, a path outside the preopens or a directory is `not-found`, never a trap. Natively the same
//! [`FileBlob`] reads ordinary files, which is how it is unit-tested.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};

#[cfg(target_arch = "wasm32")]
mod wit_glue;

/// The most bytes one [`FileBlob::read`] returns (the store's `max-read-len`). A read is one
/// buffer in this component's memory and a copy into the caller's, so this bounds the memory a
/// read can cost; the engine splits larger reads.
pub const MAX_READ_LEN: u32 = 16 << 20;

/// Why a store call failed; one-to-one with the WIT `store-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No readable file at this path (missing, outside the preopened directories, a directory).
    #[error("not found: {0}")]
    NotFound(String),
    /// The range does not lie inside the file.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A read of more than the limit (the payload).
    #[error("read larger than the store's limit of {0} bytes")]
    TooLarge(u32),
    /// Reading failed (an I/O error, a file that shrank, no memory for the buffer).
    #[error("I/O error: {0}")]
    Io(String),
}

/// An open model file.
#[derive(Debug)]
pub struct FileBlob {
    file: File,
    size: u64,
    name: String,
}

impl FileBlob {
    /// Opens the regular file at `name`.
    pub fn open(name: &str) -> Result<FileBlob, Error> {
        let not_found = |why: &str| Error::NotFound(format!("{name}: {why}"));
        let file = File::open(name).map_err(|e| match e.kind() {
            ErrorKind::NotFound => not_found(
                "no such file (only files under the directories the host preopened are visible)",
            ),
            // wasi:filesystem refuses paths that leave a preopened directory (`..`, absolute
            // symlinks) as not permitted: to the caller that file does not exist.
            ErrorKind::PermissionDenied => not_found(&format!(
                "not permitted ({e}): outside the preopened directories?"
            )),
            _ => not_found(&e.to_string()),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::Io(format!("{name}: {e}")))?;
        if !meta.is_file() {
            return Err(not_found("not a regular file"));
        }
        Ok(FileBlob {
            file,
            size: meta.len(),
            name: name.to_owned(),
        })
    }

    /// The file's size in bytes (when it was opened).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Exactly `len` bytes at `offset`: the range must lie in the file and `len` be at most
    /// [`MAX_READ_LEN`].
    pub fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        if len > MAX_READ_LEN {
            return Err(Error::TooLarge(MAX_READ_LEN));
        }
        let end = offset.checked_add(u64::from(len));
        if end.is_none_or(|end| end > self.size) {
            return Err(Error::OutOfRange(format!(
                "{} bytes at offset {offset} of {} ({} bytes)",
                len, self.name, self.size
            )));
        }
        let len = usize::try_from(len).map_err(|_| Error::TooLarge(MAX_READ_LEN))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len)
            .map_err(|_| Error::Io(format!("no memory for a read of {len} bytes")))?;
        buf.resize(len, 0);
        // `&File` reads and seeks: the position is the file's, which is fine in a component,
        // where calls never overlap.
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => Error::Io(format!(
                    "{} ended before offset {}: it shrank since it was opened",
                    self.name,
                    offset + buf.len() as u64
                )),
                _ => Error::Io(format!("{}: {e}", self.name)),
            })?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn reads_ranges() {
        let data: Vec<u8> = (0..=255).collect();
        let f = file(&data);
        let b = FileBlob::open(f.path().to_str().unwrap()).unwrap();
        assert_eq!(b.size(), 256);
        assert_eq!(b.read(10, 5).unwrap(), [10, 11, 12, 13, 14]);
        assert_eq!(b.read(0, 0).unwrap(), Vec::<u8>::new());
        assert_eq!(b.read(250, 6).unwrap(), [250, 251, 252, 253, 254, 255]);
        assert_eq!(b.read(256, 0).unwrap(), Vec::<u8>::new());
        // Out of order: every read seeks.
        assert_eq!(b.read(1, 2).unwrap(), [1, 2]);
    }

    #[test]
    fn rejects_bad_ranges() {
        let f = file(&[0; 100]);
        let b = FileBlob::open(f.path().to_str().unwrap()).unwrap();
        assert!(matches!(b.read(99, 2), Err(Error::OutOfRange(_))));
        assert!(matches!(b.read(101, 0), Err(Error::OutOfRange(_))));
        assert!(matches!(b.read(u64::MAX, 1), Err(Error::OutOfRange(_))));
        assert_eq!(
            b.read(0, MAX_READ_LEN + 1),
            Err(Error::TooLarge(MAX_READ_LEN))
        );
    }

    #[test]
    fn missing_files_and_directories_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.gguf");
        let e = FileBlob::open(missing.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("missing.gguf")),
            "{e}"
        );
        let e = FileBlob::open(dir.path().to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("not a regular file")),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_shrank_is_an_io_error() {
        let f = file(&[7; 64]);
        let b = FileBlob::open(f.path().to_str().unwrap()).unwrap();
        f.as_file().set_len(10).unwrap();
        assert!(matches!(b.read(0, 64), Err(Error::Io(m)) if m.contains("shrank")));
    }
}

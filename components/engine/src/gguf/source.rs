//! Where GGUF bytes come from: anything that can read bytes at a 64-bit offset.
//!
//! Natively that is a memory map or a file; in the guest it is the `memory64-store` import. The reader
//! never needs the whole file in memory, so a wasm32 guest can parse a 40 GiB model's header.

use crate::{Error, Result};

/// Bytes at 64-bit offsets. Implementations must fail (not panic) on a range past the end.
pub trait ByteSource {
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// A hint that `offset..offset + len` will be read soon (the store may start reading it).
    fn prefetch(&self, _offset: u64, _len: u64) {}
    /// `len` bytes at `offset` in a new buffer. A source that receives owned buffers anyway (the
    /// guest's store import) hands its own over instead of copying it.
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        data.try_reserve_exact(len)
            .map_err(|_| Error::OutOfMemory(format!("{len} bytes at offset {offset}")))?;
        data.resize(len, 0);
        self.read_exact_at(offset, &mut data)?;
        Ok(data)
    }
}

impl ByteSource for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start =
            usize::try_from(offset).map_err(|_| out_of_range(offset, buf.len(), self.size()))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| out_of_range(offset, buf.len(), self.size()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ByteSource for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

impl<T: ByteSource + ?Sized> ByteSource for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

#[cfg(unix)]
impl ByteSource for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        FileExt::read_exact_at(self, buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                out_of_range(offset, buf.len(), ByteSource::size(self))
            } else {
                Error::Store(e.to_string())
            }
        })
    }
}

/// WASI files (the engine's own tests under `wasmtime run --dir`): seek and read. The target
/// has no threads, so no other read can move the position in between.
#[cfg(target_os = "wasi")]
impl ByteSource for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = self;
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(buf))
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    out_of_range(offset, buf.len(), ByteSource::size(self))
                } else {
                    Error::Store(e.to_string())
                }
            })
    }
}

fn out_of_range(offset: u64, len: usize, size: u64) -> Error {
    Error::Store(format!(
        "read of {len} bytes at offset {offset} is past the end ({size} bytes)"
    ))
}

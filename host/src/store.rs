//! `chord:memory64-store`: model bytes served from memory-mapped files.
//!
//! The host registers files under names ([`BlobStore::register`]); the guest opens blobs by those names
//! and nothing else is reachable. A file is mapped when first opened and the map is shared by every
//! open handle, so a model of any size costs address space, not memory: pages are read from disk when
//! the guest first reads them, and `prefetch` asks the kernel to read ahead (`madvise(WILLNEED)`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;
use wasmtime::component::Resource;

use crate::bindings::wit_store::{self, StoreError};
use crate::runtime::Ctx;

/// Default limit on one `blob.read`: large enough for any layer's tensor, small enough that one
/// call cannot ask the host for gigabytes.
pub const DEFAULT_MAX_READ_LEN: u32 = 64 << 20;

/// What the store has done, for `chord` to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Successful `blob.open` calls.
    pub opens: u64,
    /// Successful `blob.read` calls.
    pub reads: u64,
    /// Bytes returned by `blob.read`.
    pub bytes_served: u64,
    /// `blob.prefetch` calls that advised the kernel.
    pub prefetches: u64,
    /// Bytes covered by those calls (after clamping to the blob).
    pub bytes_prefetched: u64,
    /// Bytes served by reads that fell in a range prefetched before (each byte counted once per
    /// read): how much of the prefetching was used.
    pub prefetch_bytes_used: u64,
}

#[derive(Default)]
struct Counters {
    opens: AtomicU64,
    reads: AtomicU64,
    bytes_served: AtomicU64,
    prefetches: AtomicU64,
    bytes_prefetched: AtomicU64,
    prefetch_bytes_used: AtomicU64,
}

/// A range of a mapped file whose pages the prefetch thread touches.
type TouchJob = (Arc<MappedFile>, usize, usize);

/// How many recent prefetch ranges are remembered to count their use.
const PREFETCH_RANGES: usize = 64;

/// One registered file: its path, and its map once opened.
struct Entry {
    path: PathBuf,
    map: Option<Arc<MappedFile>>,
}

/// A mapped file.
pub struct MappedFile {
    map: Mmap,
    path: PathBuf,
}

impl MappedFile {
    fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only. Its contents change only if another process modifies the
        // file while it is mapped (a truncation can even raise SIGBUS); model files are not written
        // while chord runs, the same assumption llama.cpp's mmap loader makes.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedFile {
            map,
            path: path.to_owned(),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The path it was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The blobs a runtime's guest may open, by name; shared between the runtime and its store context.
pub struct BlobStore {
    entries: Mutex<HashMap<String, Entry>>,
    max_read_len: u32,
    counters: Counters,
    /// Recent prefetch ranges: (file identity, start, end), oldest first.
    prefetched: Mutex<std::collections::VecDeque<(usize, u64, u64)>>,
    /// The thread that touches prefetched pages, started on the first prefetch.
    toucher: Mutex<Option<std::sync::mpsc::Sender<TouchJob>>>,
}

impl BlobStore {
    /// An empty store whose reads return at most `max_read_len` bytes (at least 1).
    pub fn new(max_read_len: u32) -> BlobStore {
        BlobStore {
            entries: Mutex::default(),
            max_read_len: max_read_len.max(1),
            counters: Counters::default(),
            prefetched: Mutex::default(),
            toucher: Mutex::default(),
        }
    }

    /// Makes `path` openable as `name`. The file is opened when the guest first opens the blob, so a
    /// missing file is reported to the guest as `not-found`, like an unknown name. Registering a name
    /// again points it at the new path.
    pub fn register(&self, name: impl Into<String>, path: impl Into<PathBuf>) {
        let mut entries = self.lock();
        entries.insert(
            name.into(),
            Entry {
                path: path.into(),
                map: None,
            },
        );
    }

    /// Forgets `name` (open handles keep their map).
    pub fn unregister(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The largest read one call serves.
    pub fn max_read_len(&self) -> u32 {
        self.max_read_len
    }

    /// Counters so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            opens: c.opens.load(Relaxed),
            reads: c.reads.load(Relaxed),
            bytes_served: c.bytes_served.load(Relaxed),
            prefetches: c.prefetches.load(Relaxed),
            bytes_prefetched: c.bytes_prefetched.load(Relaxed),
            prefetch_bytes_used: c.prefetch_bytes_used.load(Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (each operation is one
        // insert/remove/assignment), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `name`: maps its file on first use.
    pub fn open(&self, name: &str) -> Result<BlobHandle, StoreError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| StoreError::NotFound(format!("no blob is named {name:?}")))?;
        let map = match &entry.map {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(MappedFile::open(&entry.path).map_err(|e| {
                    let what = format!("{}: {e}", entry.path.display());
                    if e.kind() == std::io::ErrorKind::NotFound {
                        StoreError::NotFound(what)
                    } else {
                        StoreError::Io(what)
                    }
                })?);
                entry.map = Some(m.clone());
                m
            }
        };
        self.counters.opens.fetch_add(1, Relaxed);
        Ok(BlobHandle { file: map })
    }

    /// `len` bytes at `offset` of `blob`, checked against the blob and the per-call limit.
    pub fn read(&self, blob: &BlobHandle, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        self.read_view(blob, offset, len).map(|b| b.to_vec())
    }

    /// [`BlobStore::read`] as a view of the map: lowering it into the guest's memory is the only
    /// copy (a `Vec` would be a second one, and streamed layers are hundreds of MB per token).
    pub fn read_view(
        &self,
        blob: &BlobHandle,
        offset: u64,
        len: u32,
    ) -> Result<bytes::Bytes, StoreError> {
        if len > self.max_read_len {
            return Err(StoreError::TooLarge(self.max_read_len));
        }
        let bytes = blob.file.bytes();
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(usize::try_from(len).ok()?)?))
            .filter(|r| r.end <= bytes.len())
            .ok_or_else(|| {
                StoreError::OutOfRange(format!(
                    "{len} bytes at offset {offset} of {} ({} bytes)",
                    blob.file.path.display(),
                    bytes.len()
                ))
            })?;
        self.counters.reads.fetch_add(1, Relaxed);
        self.counters
            .bytes_served
            .fetch_add(u64::from(len), Relaxed);
        self.count_prefetch_use(blob, offset, offset + u64::from(len));
        Ok(bytes::Bytes::from_owner(MapRange {
            file: blob.file.clone(),
            range,
        }))
    }

    /// Has a background thread read one byte of every page of `start..start + len`, so the page
    /// faults (and any disk reads `madvise` has not finished) happen there rather than in the
    /// guest's next `read`, which then only copies.
    fn touch_later(&self, file: &Arc<MappedFile>, start: usize, len: usize) {
        let mut toucher = self.toucher.lock().unwrap_or_else(|p| p.into_inner());
        if toucher.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<TouchJob>();
            let spawned = std::thread::Builder::new()
                .name("chord-prefetch".into())
                .spawn(move || {
                    for (file, start, len) in rx {
                        let bytes = &file.bytes()[start..start + len];
                        let mut sum = 0u8;
                        for page in bytes.chunks(4096) {
                            // SAFETY: `page` is a valid, non-empty slice of the map.
                            sum ^= unsafe { std::ptr::read_volatile(page.as_ptr()) };
                        }
                        std::hint::black_box(sum);
                    }
                });
            match spawned {
                Ok(_) => *toucher = Some(tx),
                // No thread: prefetch stays a madvise hint.
                Err(_) => return,
            }
        }
        if let Some(tx) = toucher.as_ref() {
            let _ = tx.send((file.clone(), start, len));
        }
    }

    /// Adds the part of `start..end` that earlier prefetches covered to `prefetch_bytes_used`,
    /// and forgets prefetch ranges the read has gone past.
    fn count_prefetch_use(&self, blob: &BlobHandle, start: u64, end: u64) {
        let id = Arc::as_ptr(&blob.file) as usize;
        let mut ranges = self.prefetched.lock().unwrap_or_else(|p| p.into_inner());
        // The union of the overlaps: ranges may overlap each other.
        let mut covered: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|r| r.0 == id && r.1 < end && r.2 > start)
            .map(|r| (r.1.max(start), r.2.min(end)))
            .collect();
        covered.sort_unstable();
        let (mut used, mut upto) = (0u64, start);
        for (a, b) in covered {
            let a = a.max(upto);
            if b > a {
                used += b - a;
                upto = b;
            }
        }
        ranges.retain(|r| !(r.0 == id && r.1 >= start && r.2 <= end));
        drop(ranges);
        self.counters.prefetch_bytes_used.fetch_add(used, Relaxed);
    }

    /// Asks the kernel to read `offset..offset+len` of `blob` ahead; clamps to the blob, ignores
    /// failures (it is a hint).
    pub fn prefetch(&self, blob: &BlobHandle, offset: u64, len: u64) {
        let size = blob.file.bytes().len();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= size || len == 0 {
            return;
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(size - start);
        #[cfg(unix)]
        {
            if blob
                .file
                .map
                .advise_range(memmap2::Advice::WillNeed, start, len)
                .is_err()
            {
                return;
            }
        }
        self.counters.prefetches.fetch_add(1, Relaxed);
        self.counters
            .bytes_prefetched
            .fetch_add(len as u64, Relaxed);
        self.touch_later(&blob.file, start, len);
        let mut ranges = self.prefetched.lock().unwrap_or_else(|p| p.into_inner());
        if ranges.len() == PREFETCH_RANGES {
            ranges.pop_front();
        }
        let id = Arc::as_ptr(&blob.file) as usize;
        ranges.push_back((id, offset, offset + len as u64));
    }
}

/// What a guest's `blob` resource refers to: an open, mapped file.
pub struct BlobHandle {
    file: Arc<MappedFile>,
}

/// A range of a mapped file, kept alive by its owner: the bytes of a [`BlobStore::read_view`].
struct MapRange {
    file: Arc<MappedFile>,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for MapRange {
    fn as_ref(&self) -> &[u8] {
        &self.file.map[self.range.clone()]
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl BlobHandle {
    /// The mapped file (for compute devices that read weights in place).
    pub(crate) fn file(&self) -> Arc<MappedFile> {
        self.file.clone()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.file.bytes().len() as u64
    }
}

// ---------------------------------------------------------------------------------------------
// The WIT import, on the store context.

/// Replaces the generated `blob.read` (whose bindings return a `Vec<u8>`, one more copy) with one
/// that lowers a view of the map straight into guest memory. Call after the generated
/// `add_to_linker`.
pub(crate) fn add_zero_copy_read(
    linker: &mut wasmtime::component::Linker<Ctx>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut store = linker.instance("chord:memory64-store/store@0.1.0")?;
    store.func_wrap(
        "[method]blob.read",
        |mut cx: wasmtime::StoreContextMut<'_, Ctx>,
         (blob, offset, len): (Resource<BlobHandle>, u64, u32)| {
            let ctx = cx.data_mut();
            let handle = ctx.table.get(&blob)?;
            Ok((ctx.blobs.read_view(handle, offset, len),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl wit_store::Host for Ctx {
    fn max_read_len(&mut self) -> wasmtime::Result<u32> {
        Ok(self.blobs.max_read_len())
    }
}

impl wit_store::HostBlob for Ctx {
    fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<BlobHandle>, StoreError>> {
        match self.blobs.open(&name) {
            Ok(handle) => Ok(Ok(self.table.push(handle)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn size(&mut self, blob: Resource<BlobHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&blob)?.size())
    }

    fn read(
        &mut self,
        blob: Resource<BlobHandle>,
        offset: u64,
        len: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, StoreError>> {
        let handle = self.table.get(&blob)?;
        Ok(self.blobs.read(handle, offset, len))
    }

    fn prefetch(
        &mut self,
        blob: Resource<BlobHandle>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<()> {
        let handle = self.table.get(&blob)?;
        self.blobs.prefetch(handle, offset, len);
        Ok(())
    }

    fn drop(&mut self, blob: Resource<BlobHandle>) -> wasmtime::Result<()> {
        self.table.delete(blob)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chord-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reads_are_checked_and_counted() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let path = temp_file("reads.bin", &data);
        let store = BlobStore::new(4096);
        store.register("m", &path);
        let b = store.open("m").unwrap();
        assert_eq!(b.size(), 10_000);
        assert_eq!(store.read(&b, 9_990, 10).unwrap(), &data[9_990..]);
        assert_eq!(store.read(&b, 10_000, 0).unwrap(), Vec::<u8>::new());
        assert!(matches!(
            store.read(&b, 9_991, 10),
            Err(StoreError::OutOfRange(_))
        ));
        assert!(matches!(
            store.read(&b, u64::MAX, 1),
            Err(StoreError::OutOfRange(_))
        ));
        assert!(matches!(
            store.read(&b, 0, 4097),
            Err(StoreError::TooLarge(4096))
        ));
        store.prefetch(&b, 5_000, u64::MAX);
        store.prefetch(&b, 20_000, 10); // past the end: ignored
        let s = store.stats();
        assert_eq!((s.opens, s.reads, s.bytes_served), (1, 2, 10));
        assert_eq!((s.prefetches, s.bytes_prefetched), (1, 5_000));
    }

    #[test]
    fn only_registered_names_open() {
        let path = temp_file("names.bin", b"abc");
        let store = BlobStore::new(DEFAULT_MAX_READ_LEN);
        assert!(matches!(
            store.open("names.bin"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.open(path.to_str().unwrap()),
            Err(StoreError::NotFound(_))
        ));
        store.register("missing", path.with_extension("nope"));
        assert!(matches!(
            store.open("missing"),
            Err(StoreError::NotFound(_))
        ));
        store.register("empty", temp_file("empty.bin", b""));
        let e = store.open("empty").unwrap();
        assert_eq!(e.size(), 0);
        assert!(matches!(
            store.read(&e, 0, 1),
            Err(StoreError::OutOfRange(_))
        ));
    }
}

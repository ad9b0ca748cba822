//! The component's exports: `chord:memory64-store/store` over [`FileBlob`].

use crate::{Error, FileBlob, MAX_READ_LEN};

wit_bindgen::generate!({
    path: "../../wit/deps/memory64-store",
    world: "chord:memory64-store/provider",
});

use exports::chord::memory64_store::store::{self as wit, Blob, StoreError};

struct Component;

export!(Component);

impl wit::Guest for Component {
    type Blob = FileBlob;

    fn max_read_len() -> u32 {
        MAX_READ_LEN
    }
}

impl wit::GuestBlob for FileBlob {
    fn open(name: String) -> Result<Blob, StoreError> {
        FileBlob::open(&name).map(Blob::new).map_err(to_wit)
    }

    fn size(&self) -> u64 {
        FileBlob::size(self)
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        FileBlob::read(self, offset, len).map_err(to_wit)
    }

    // Reads are synchronous and served by the host's file system (and its page cache), so there
    // is nothing to start early.
    fn prefetch(&self, _offset: u64, _len: u64) {}
}

fn to_wit(e: Error) -> StoreError {
    match e {
        Error::NotFound(m) => StoreError::NotFound(m),
        Error::OutOfRange(m) => StoreError::OutOfRange(m),
        Error::TooLarge(n) => StoreError::TooLarge(n),
        Error::Io(m) => StoreError::Io(m),
    }
}

//! The host side of the WIT interfaces (`wit/`): the one `bindgen!` in the host.
//!
//! Imports (`chord:memory64-store/store`, `chord:compute/compute`) are implemented on
//! [`crate::runtime::Ctx`] in `store.rs` and `compute.rs`; the export (`chord:llm/inference`) is called
//! from `runtime.rs`. Imports are `trappable`: a host function returns `Err` only for a guest bug
//! (a stale resource handle), which traps; everything else is a WIT error value.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "chord:llm/engine",
    imports: { default: trappable },
    with: {
        "chord:memory64-store/store.blob": crate::store::BlobHandle,
        "chord:compute/compute.matrix": crate::compute::HostMatrix,
        "chord:compute/compute.kv-cache": crate::compute::HostKvCache,
        "chord:compute/compute.program": crate::compute::HostProgram,
    },
});

pub use chord::compute::compute as wit_compute;
pub use chord::memory64_store::store as wit_store;
pub use exports::chord::llm::inference as wit_llm;

//! A `chord:compute` provider with no devices: `devices` is empty, so the engine computes with its
//! own kernels, and every call that needs a device returns `no-device` (none can succeed, since
//! there is no device index to name).
//!
//! The interface `use`s the store's `blob` type, so this component also imports
//! `chord:memory64-store/store`; a composition gives it the same store instance as the engine
//! (scripts/standalone.wac).
//!
//! Only the wasm32 build has content: natively this crate is empty.

#[cfg(target_arch = "wasm32")]
mod wit_glue {
    wit_bindgen::generate!({
        path: ["../../wit/deps/memory64-store", "../../wit/deps/compute"],
        world: "chord:compute/provider",
        // The store interface is imported only for its `blob` type.
        generate_all,
    });

    use chord::memory64_store::store::Blob;
    use exports::chord::compute::compute::{
        self as wit, Attention, ComputeError, DeviceInfo, KvCache, KvCacheBorrow, KvShape,
        LogitRows, Matrix, MatrixBorrow, Program, ProgramDesc, Rope,
    };

    fn no_device(device: u32) -> ComputeError {
        ComputeError::NoDevice(format!(
            "device {device}: this compute provider (chord-no-compute) has no devices"
        ))
    }

    struct Component;

    export!(Component);

    impl wit::Guest for Component {
        type Matrix = NoMatrix;
        type KvCache = NoKvCache;
        type Program = NoProgram;

        fn devices() -> Vec<DeviceInfo> {
            Vec::new()
        }
    }

    /// A matrix that can never be made: its constructor fails.
    struct NoMatrix;

    impl wit::GuestMatrix for NoMatrix {
        fn from_blob(
            device: u32,
            _source: &Blob,
            _offset: u64,
            _element_type: u32,
            _n_cols: u64,
            _n_rows: u64,
        ) -> Result<Matrix, ComputeError> {
            Err(no_device(device))
        }

        // No `NoMatrix` exists, so this is never called; it still answers rather than trap.
        fn matmul(&self, _input: Vec<f32>, _n: u32) -> Result<Vec<f32>, ComputeError> {
            Err(no_device(0))
        }
    }

    /// A KV cache that can never be made, like [`NoMatrix`].
    struct NoKvCache;

    impl wit::GuestKvCache for NoKvCache {
        fn create(device: u32, _shape: KvShape) -> Result<KvCache, ComputeError> {
            Err(no_device(device))
        }

        fn attend(
            &self,
            _layer: u32,
            _attention: Attention,
            _pos: u32,
            _n: u32,
            _q: Vec<f32>,
            _k: Vec<f32>,
            _v: Vec<f32>,
        ) -> Result<Vec<f32>, ComputeError> {
            Err(no_device(0))
        }

        fn shift(
            &self,
            _n_past: u32,
            _n_keep: u32,
            _n_discard: u32,
            _ropes: Vec<Rope>,
        ) -> Result<(), ComputeError> {
            Err(no_device(0))
        }
    }

    /// A program that can never be made, like [`NoMatrix`].
    struct NoProgram;

    impl wit::GuestProgram for NoProgram {
        fn create(
            device: u32,
            _desc: ProgramDesc,
            _matrices: Vec<MatrixBorrow<'_>>,
        ) -> Result<Program, ComputeError> {
            Err(no_device(device))
        }

        fn run(
            &self,
            _cache: KvCacheBorrow<'_>,
            _pos: u32,
            _n: u32,
            _x: Vec<f32>,
            _rows: LogitRows,
        ) -> Result<Vec<f32>, ComputeError> {
            Err(no_device(0))
        }
    }
}

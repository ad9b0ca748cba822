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
        self as wit, ComputeError, DeviceInfo, Graph, Tensor, TensorBorrow,
    };

    fn no_device(device: u32) -> ComputeError {
        ComputeError::NoDevice(format!(
            "device {device}: this compute provider (chord-no-compute) has no devices"
        ))
    }

    struct Component;

    export!(Component);

    impl wit::Guest for Component {
        type Tensor = NoTensor;
        type Graph = NoGraph;

        fn devices() -> Vec<DeviceInfo> {
            Vec::new()
        }
    }

    /// A tensor that can never be made: every constructor fails.
    struct NoTensor;

    impl wit::GuestTensor for NoTensor {
        fn from_blob(
            device: u32,
            _source: &Blob,
            _offset: u64,
            _element_type: u32,
            _shape: Vec<u64>,
        ) -> Result<Tensor, ComputeError> {
            Err(no_device(device))
        }

        fn zeros(device: u32, _shape: Vec<u64>) -> Result<Tensor, ComputeError> {
            Err(no_device(device))
        }

        // No `NoTensor` exists, so the methods below are never called; they still answer
        // sensibly rather than trap.
        fn shape(&self) -> Vec<u64> {
            Vec::new()
        }

        fn write(&self, _offset: u64, _values: Vec<f32>) -> Result<(), ComputeError> {
            Err(no_device(0))
        }

        fn read(&self, _offset: u64, _len: u32) -> Result<Vec<f32>, ComputeError> {
            Err(no_device(0))
        }
    }

    /// A graph that can never be made.
    struct NoGraph;

    impl wit::GuestGraph for NoGraph {
        fn new(device: u32) -> Result<Graph, ComputeError> {
            Err(no_device(device))
        }

        fn matmul(
            &self,
            _out: TensorBorrow<'_>,
            _weights: TensorBorrow<'_>,
            _input: TensorBorrow<'_>,
        ) -> Result<(), ComputeError> {
            Err(no_device(0))
        }

        fn run(&self) -> Result<(), ComputeError> {
            Err(no_device(0))
        }
    }
}

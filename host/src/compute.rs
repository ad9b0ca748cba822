//! `chord:compute`: accelerators the guest may use.
//!
//! Today this host offers none: `devices` is empty, so the engine computes with its own kernels, and
//! every constructor returns `no-device`. The native CPU, CUDA and wgpu backends (behind one trait)
//! come with issue E, together with the real tensor and graph interface. Until then no [`Tensor`] or
//! [`Graph`] can exist, which the types below encode: they have no values.

use wasmtime::component::Resource;

use crate::bindings::wit_compute::{self, ComputeError, DeviceInfo, GgmlType};
use crate::bindings::wit_store::Blob;
use crate::runtime::Ctx;

/// A tensor on a device. No device exists yet, so neither does a tensor.
pub enum Tensor {}

/// A recorded graph of ops. No device exists yet, so neither does a graph.
pub enum Graph {}

fn no_device(device: u32) -> ComputeError {
    ComputeError::NoDevice(format!(
        "device {device} does not exist: this host has no compute devices"
    ))
}

impl wit_compute::Host for Ctx {
    fn devices(&mut self) -> wasmtime::Result<Vec<DeviceInfo>> {
        Ok(Vec::new())
    }
}

impl wit_compute::HostTensor for Ctx {
    fn from_blob(
        &mut self,
        device: u32,
        _source: Resource<Blob>,
        _offset: u64,
        _element_type: GgmlType,
        _shape: Vec<u64>,
    ) -> wasmtime::Result<Result<Resource<Tensor>, ComputeError>> {
        Ok(Err(no_device(device)))
    }

    fn zeros(
        &mut self,
        device: u32,
        _shape: Vec<u64>,
    ) -> wasmtime::Result<Result<Resource<Tensor>, ComputeError>> {
        Ok(Err(no_device(device)))
    }

    fn shape(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u64>> {
        match *self.table.get(&t)? {}
    }

    fn write(
        &mut self,
        t: Resource<Tensor>,
        _offset: u64,
        _values: Vec<f32>,
    ) -> wasmtime::Result<Result<(), ComputeError>> {
        match *self.table.get(&t)? {}
    }

    fn read(
        &mut self,
        t: Resource<Tensor>,
        _offset: u64,
        _len: u32,
    ) -> wasmtime::Result<Result<Vec<f32>, ComputeError>> {
        match *self.table.get(&t)? {}
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        match self.table.delete(t)? {}
    }
}

impl wit_compute::HostGraph for Ctx {
    fn new(&mut self, device: u32) -> wasmtime::Result<Result<Resource<Graph>, ComputeError>> {
        Ok(Err(no_device(device)))
    }

    fn matmul(
        &mut self,
        g: Resource<Graph>,
        _out: Resource<Tensor>,
        _weights: Resource<Tensor>,
        _input: Resource<Tensor>,
    ) -> wasmtime::Result<Result<(), ComputeError>> {
        match *self.table.get(&g)? {}
    }

    fn run(&mut self, g: Resource<Graph>) -> wasmtime::Result<Result<(), ComputeError>> {
        match *self.table.get(&g)? {}
    }

    fn drop(&mut self, g: Resource<Graph>) -> wasmtime::Result<()> {
        match self.table.delete(g)? {}
    }
}

//! `chord:compute`: the devices the guest may compute on.
//!
//! The host offers its CPU backend ([`cpu`]) as device 0 unless the runtime was built for the
//! guest's own kernels (`--backend guest`), in which case `devices` is empty. A `matrix` is read in
//! place from the map of the blob it names, never through guest memory.

pub mod cpu;
pub mod pool;

use std::sync::Arc;

use wasmtime::component::Resource;

use crate::bindings::wit_compute::{self, ComputeError, DeviceInfo, DeviceKind, GgmlType};
use crate::runtime::Ctx;
use crate::store::BlobHandle;
use chord_engine::model::DeviceMatrix;
use cpu::CpuMatrix;

/// A `matrix` resource: a weight matrix on the CPU backend.
pub type HostMatrix = CpuMatrix;

/// A compute error as WIT data.
fn wit_error(e: chord_engine::Error) -> ComputeError {
    use chord_engine::Error as E;
    match e {
        E::OutOfMemory(m) => ComputeError::OutOfMemory(m),
        E::Unsupported(m) => ComputeError::Unsupported(m),
        E::InvalidArgument(m) | E::InvalidModel(m) => ComputeError::InvalidArgument(m),
        e => ComputeError::Device(e.to_string()),
    }
}

impl wit_compute::Host for Ctx {
    fn devices(&mut self) -> wasmtime::Result<Vec<DeviceInfo>> {
        Ok(self
            .cpu
            .iter()
            .map(|b| DeviceInfo {
                name: b.name(),
                kind: DeviceKind::Cpu,
                // Weights stay in the page cache behind the map: any size the store can map.
                memory_bytes: u64::MAX,
                threads: u32::try_from(b.threads()).unwrap_or(u32::MAX),
            })
            .collect())
    }
}

impl wit_compute::HostMatrix for Ctx {
    fn from_blob(
        &mut self,
        device: u32,
        source: Resource<BlobHandle>,
        offset: u64,
        element_type: GgmlType,
        n_cols: u64,
        n_rows: u64,
    ) -> wasmtime::Result<Result<Resource<HostMatrix>, ComputeError>> {
        let Some(backend) = self.cpu.clone().filter(|_| device == 0) else {
            return Ok(Err(ComputeError::NoDevice(format!(
                "device {device} does not exist: this host offers {} compute device(s)",
                usize::from(self.cpu.is_some())
            ))));
        };
        let file = self.table.get(&source)?.file();
        let made = (|| {
            let ty = chord_engine::quant::GgmlType::from_u32(element_type).ok_or_else(|| {
                chord_engine::Error::Unsupported(format!("ggml type {element_type}"))
            })?;
            let size = |v: u64| {
                usize::try_from(v).map_err(|_| {
                    chord_engine::Error::InvalidArgument(format!("matrix dimension {v}"))
                })
            };
            backend.matrix(
                &format!("matrix at byte {offset}"),
                ty,
                size(n_cols)?,
                size(n_rows)?,
                file as Arc<dyn AsRef<[u8]> + Send + Sync>,
                offset,
            )
        })();
        Ok(match made {
            Ok(m) => Ok(self.table.push(m)?),
            Err(e) => Err(wit_error(e)),
        })
    }

    fn matmul(
        &mut self,
        m: Resource<HostMatrix>,
        input: Vec<f32>,
        n: u32,
    ) -> wasmtime::Result<Result<Vec<f32>, ComputeError>> {
        let m = self.table.get(&m)?;
        let n = n as usize;
        let Some(len) = n.checked_mul(m.n_rows()) else {
            return Ok(Err(ComputeError::InvalidArgument(format!("{n} rows"))));
        };
        let mut out = Vec::new();
        if out.try_reserve_exact(len).is_err() {
            return Ok(Err(ComputeError::OutOfMemory(format!("{len} outputs"))));
        }
        out.resize(len, 0.0);
        Ok(m.matmul(&input, n, &mut out)
            .map(|()| out)
            .map_err(wit_error))
    }

    fn drop(&mut self, m: Resource<HostMatrix>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

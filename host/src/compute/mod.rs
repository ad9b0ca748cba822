//! `chord:compute`: the devices the guest may compute on.
//!
//! The host offers its CPU backend ([`cpu`]) as device 0 unless the runtime was built for the
//! guest's own kernels (`--backend guest`), in which case `devices` is empty. A `matrix` is read in
//! place from the map of the blob it names, never through guest memory. A `kv-cache` counts
//! against the guest's memory limit.

pub mod cpu;
pub mod pool;

use std::sync::Arc;

use wasmtime::component::Resource;

use crate::bindings::wit_compute::{
    self, Attention, Buffer, ComputeError, DeviceInfo, DeviceKind, GgmlType, Glu as WitGlu,
    KvShape as WitKvShape, LogitRows, Op as WitOp, ProgramDesc, Rope as WitRope, RopeKind,
};
use crate::runtime::Ctx;
use crate::store::BlobHandle;
use chord_engine::model::graph::{Buf, Glu, N_BUFS, Op, RopeDef};
use chord_engine::model::{
    AttnCfg, DeviceKv, DeviceMatrix, DeviceProgram, KvShape, Rope, RopeType, Rows, Runner,
};
use cpu::{CpuBackend, CpuKv, CpuMatrix};

/// A `matrix` resource: a weight matrix on the CPU backend (shared with the programs that name it).
pub type HostMatrix = Arc<CpuMatrix>;

/// A `kv-cache` resource: a session's keys and values on the CPU backend.
pub type HostKvCache = CpuKv;

/// A `program` resource: a session's forward step on the CPU backend.
pub struct HostProgram {
    /// Out of its slot only while it runs.
    runner: Option<Runner>,
    /// What it counts against the guest's memory limit.
    bytes: usize,
}

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

impl Ctx {
    /// The backend behind device `device`, or the error that names why there is none.
    fn device(&self, device: u32) -> Result<Arc<CpuBackend>, ComputeError> {
        self.cpu.clone().filter(|_| device == 0).ok_or_else(|| {
            ComputeError::NoDevice(format!(
                "device {device} does not exist: this host offers {} compute device(s)",
                usize::from(self.cpu.is_some())
            ))
        })
    }
}

/// A vector of `len` zeros for a call's result, or `out-of-memory`.
fn zeros(len: usize, what: &str) -> Result<Vec<f32>, ComputeError> {
    let mut out = Vec::new();
    if out.try_reserve_exact(len).is_err() {
        return Err(ComputeError::OutOfMemory(format!("{len} {what}")));
    }
    out.resize(len, 0.0);
    Ok(out)
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
        let backend = match self.device(device) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
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
            Ok(m) => Ok(self.table.push(Arc::new(m))?),
            Err(e) => Err(wit_error(e)),
        })
    }

    fn matmul(
        &mut self,
        m: Resource<HostMatrix>,
        input: Vec<f32>,
        n: u32,
    ) -> wasmtime::Result<Result<Vec<f32>, ComputeError>> {
        self.calls.matmul += 1;
        let m = self.table.get(&m)?;
        let n = n as usize;
        let Some(len) = n.checked_mul(m.n_rows()) else {
            return Ok(Err(ComputeError::InvalidArgument(format!("{n} rows"))));
        };
        let mut out = match zeros(len, "outputs") {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        Ok(m.matmul(&input, n, &mut out)
            .map(|()| out)
            .map_err(wit_error))
    }

    fn drop(&mut self, m: Resource<HostMatrix>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

impl wit_compute::HostKvCache for Ctx {
    fn create(
        &mut self,
        device: u32,
        shape: WitKvShape,
    ) -> wasmtime::Result<Result<Resource<HostKvCache>, ComputeError>> {
        let made = (|| {
            let backend = self.device(device)?;
            let shape = KvShape {
                n_layer: shape.n_layer as usize,
                n_ctx: shape.n_ctx as usize,
                n_head_kv: shape.n_head_kv as usize,
                head_dim_k: shape.head_dim_k as usize,
                head_dim_v: shape.head_dim_v as usize,
            };
            let bytes = shape.bytes().map_err(wit_error)?;
            self.limits
                .charge_device(bytes)
                .map_err(ComputeError::OutOfMemory)?;
            backend.kv_cache(&shape).map_err(|e| {
                self.limits.release_device(bytes);
                wit_error(e)
            })
        })();
        Ok(match made {
            Ok(kv) => Ok(self.table.push(kv)?),
            Err(e) => Err(e),
        })
    }

    fn attend(
        &mut self,
        kv: Resource<HostKvCache>,
        layer: u32,
        attention: Attention,
        pos: u32,
        n: u32,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
    ) -> wasmtime::Result<Result<Vec<f32>, ComputeError>> {
        self.calls.attend += 1;
        let kv = self.table.get_mut(&kv)?;
        let shape = kv.cache().shape();
        let cfg = attn_cfg(
            &attention,
            shape.n_head_kv,
            shape.head_dim_k,
            shape.head_dim_v,
        );
        let (il, pos, n) = (layer as usize, pos as usize, n as usize);
        Ok((|| {
            // The shapes are checked before anything is allocated for the result.
            kv.cache()
                .check(il, &cfg, pos, n, &q, &k, &v)
                .map_err(wit_error)?;
            let len = n
                .checked_mul(cfg.n_head)
                .and_then(|x| x.checked_mul(cfg.head_dim_v))
                .ok_or_else(|| ComputeError::InvalidArgument(format!("{n} x {cfg:?}")))?;
            let mut out = zeros(len, "attention outputs")?;
            kv.attend(il, &cfg, pos, n, &q, &k, &v, &mut out)
                .map_err(wit_error)?;
            Ok(out)
        })())
    }

    fn shift(
        &mut self,
        kv: Resource<HostKvCache>,
        n_past: u32,
        n_keep: u32,
        n_discard: u32,
        ropes: Vec<WitRope>,
    ) -> wasmtime::Result<Result<(), ComputeError>> {
        let kv = self.table.get_mut(&kv)?;
        let ropes: Vec<Rope<'_>> = ropes.iter().map(rope).collect();
        Ok(kv
            .shift(n_past as usize, n_keep as usize, n_discard as usize, &ropes)
            .map_err(wit_error))
    }

    fn drop(&mut self, kv: Resource<HostKvCache>) -> wasmtime::Result<()> {
        let kv = self.table.delete(kv)?;
        self.limits.release_device(kv.cache().bytes());
        Ok(())
    }
}

/// A WIT RoPE as the engine's.
fn rope(r: &WitRope) -> Rope<'_> {
    Rope {
        n_rot: r.n_rot as usize,
        ty: match r.kind {
            RopeKind::Normal => RopeType::Normal,
            RopeKind::Neox => RopeType::Neox,
        },
        freq_base: r.freq_base,
        freq_scale: r.freq_scale,
        factors: r.factors.as_deref(),
        attn_factor: r.attn_factor,
    }
}

/// A WIT attention (the head dimensions given apart) as the engine's.
fn attn_cfg(a: &Attention, n_head_kv: usize, head_dim_k: usize, head_dim_v: usize) -> AttnCfg {
    AttnCfg {
        n_head: a.n_head as usize,
        n_head_kv,
        head_dim_k,
        head_dim_v,
        kq_scale: a.kq_scale,
        softcap: a.softcap,
        window: a.window as usize,
        flash: a.flash,
    }
}

/// A WIT program as the engine's, its matrix indices resolved to `matrices`. Only the form is
/// converted here; [`Runner`] checks the content.
fn program(
    desc: ProgramDesc,
    matrices: &[Arc<dyn DeviceMatrix>],
) -> chord_engine::Result<DeviceProgram> {
    let invalid = |m: String| chord_engine::Error::InvalidArgument(m);
    let widths: [usize; N_BUFS] = desc
        .widths
        .iter()
        .map(|&w| w as usize)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|w: Vec<usize>| invalid(format!("{} buffer widths (not {N_BUFS})", w.len())))?;
    let matrix = |i: u32| {
        matrices
            .get(i as usize)
            .cloned()
            .ok_or_else(|| invalid(format!("matrix {i} of the {} given", matrices.len())))
    };
    let buf = |b: Buffer| match b {
        Buffer::X => Buf::X,
        Buffer::Xn => Buf::Xn,
        Buffer::Qkv => Buf::Qkv,
        Buffer::Q => Buf::Q,
        Buffer::K => Buf::K,
        Buffer::V => Buf::V,
        Buffer::Att => Buf::Att,
        Buffer::O => Buf::O,
        Buffer::Gate => Buf::Gate,
        Buffer::Up => Buf::Up,
    };
    let mut ops = Vec::new();
    ops.try_reserve_exact(desc.ops.len())
        .map_err(|_| chord_engine::Error::OutOfMemory(format!("{} operations", desc.ops.len())))?;
    for op in desc.ops {
        ops.push(match op {
            WitOp::Scale(o) => Op::Scale {
                x: buf(o.x),
                s: o.factor,
            },
            WitOp::RmsNorm(o) => Op::RmsNorm {
                out: buf(o.out),
                x: buf(o.x),
                w: o.weight,
                eps: o.eps,
            },
            WitOp::Matmul(o) => Op::MatMul {
                out: buf(o.out),
                x: buf(o.x),
                w: matrix(o.matrix)?,
            },
            WitOp::AddBias(o) => Op::AddBias {
                x: buf(o.x),
                b: o.bias,
            },
            WitOp::SplitQkv => Op::SplitQkv,
            WitOp::Rope(o) => Op::Rope {
                x: buf(o.x),
                rope: o.rope as usize,
                head_dim: o.head_dim as usize,
            },
            WitOp::Attend(o) => Op::Attend {
                layer: o.layer as usize,
                attn: attn_cfg(
                    &o.attention,
                    o.n_head_kv as usize,
                    o.head_dim_k as usize,
                    o.head_dim_v as usize,
                ),
            },
            WitOp::Add(o) => Op::Add {
                x: buf(o.x),
                y: buf(o.y),
            },
            WitOp::Glu(g) => Op::Glu(match g {
                WitGlu::Silu => Glu::Silu,
                WitGlu::GeluTanh => Glu::GeluTanh,
                WitGlu::SiluFused => Glu::SiluFused,
            }),
            WitOp::Logits(o) => Op::Logits {
                norm: o.norm,
                eps: o.eps,
                w: matrix(o.matrix)?,
                b: o.bias,
                softcap: o.softcap,
            },
        });
    }
    Ok(DeviceProgram {
        widths,
        n_vocab: desc.n_vocab as usize,
        ropes: desc.ropes.iter().map(|r| RopeDef::new(&rope(r))).collect(),
        ops,
    })
}

impl wit_compute::HostProgram for Ctx {
    fn create(
        &mut self,
        device: u32,
        desc: ProgramDesc,
        matrices: Vec<Resource<HostMatrix>>,
    ) -> wasmtime::Result<Result<Resource<HostProgram>, ComputeError>> {
        if let Err(e) = self.device(device) {
            return Ok(Err(e));
        }
        if !self.cpu_programs {
            return Ok(Err(ComputeError::Unsupported(
                "this host runs steps per operation (programs are off)".into(),
            )));
        }
        let mut held: Vec<Arc<dyn DeviceMatrix>> = Vec::with_capacity(matrices.len());
        for m in &matrices {
            held.push(self.table.get(m)?.clone());
        }
        let max_tokens = desc.max_tokens as usize;
        let made = (|| {
            let prog = program(desc, &held).map_err(wit_error)?;
            // Checked and measured before anything is allocated for it.
            let bytes = Runner::bytes(&prog, max_tokens).map_err(wit_error)?;
            self.limits
                .charge_device(bytes)
                .map_err(ComputeError::OutOfMemory)?;
            match Runner::new(prog, max_tokens) {
                Ok(r) => Ok(HostProgram {
                    runner: Some(r),
                    bytes,
                }),
                Err(e) => {
                    self.limits.release_device(bytes);
                    Err(wit_error(e))
                }
            }
        })();
        Ok(match made {
            Ok(p) => Ok(self.table.push(p)?),
            Err(e) => Err(e),
        })
    }

    fn run(
        &mut self,
        p: Resource<HostProgram>,
        cache: Resource<HostKvCache>,
        pos: u32,
        n: u32,
        x: Vec<f32>,
        rows: LogitRows,
    ) -> wasmtime::Result<Result<Vec<f32>, ComputeError>> {
        self.calls.program_run += 1;
        let rows = match rows {
            LogitRows::None => Rows::None,
            LogitRows::Last => Rows::Last,
            LogitRows::All => Rows::All,
        };
        let Some(mut runner) = self.table.get_mut(&p)?.runner.take() else {
            return Ok(Err(ComputeError::InvalidArgument(
                "the program is already running".into(),
            )));
        };
        let (pos, n) = (pos as usize, n as usize);
        let done = (|| {
            let kv = self
                .table
                .get_mut(&cache)
                .map_err(|e| ComputeError::InvalidArgument(format!("the step's KV cache: {e}")))?;
            let n_out = rows.range(n.min(runner.max_tokens())).1;
            let mut logits = zeros(n_out * runner.n_vocab(), "logits")?;
            runner
                .run(kv, pos, n, &x, rows, &mut logits)
                .map_err(wit_error)?;
            Ok(logits)
        })();
        self.table.get_mut(&p)?.runner = Some(runner);
        Ok(done)
    }

    fn drop(&mut self, p: Resource<HostProgram>) -> wasmtime::Result<()> {
        let p = self.table.delete(p)?;
        self.limits.release_device(p.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::wit_compute::{MatmulOp, ScaleOp};

    fn desc(widths: Vec<u32>, ops: Vec<WitOp>) -> ProgramDesc {
        ProgramDesc {
            widths,
            n_vocab: 4,
            ropes: Vec::new(),
            ops,
            max_tokens: 1,
        }
    }

    /// What the guest's program names is resolved or refused here; its content is the engine's
    /// to check (`model::graph`'s tests).
    #[test]
    fn malformed_program_descriptions_are_errors() {
        let scale = WitOp::Scale(ScaleOp {
            x: Buffer::X,
            factor: 2.0,
        });
        assert!(program(desc(vec![8; N_BUFS], vec![scale]), &[]).is_ok());
        let Err(e) = program(desc(vec![8; N_BUFS - 1], Vec::new()), &[]) else {
            panic!("nine widths accepted");
        };
        println!("{e}");
        let matmul = WitOp::Matmul(MatmulOp {
            out: Buffer::Q,
            x: Buffer::Xn,
            matrix: 3,
        });
        let Err(e) = program(desc(vec![8; N_BUFS], vec![matmul]), &[]) else {
            panic!("a matrix that was not given accepted");
        };
        println!("{e}");
        assert!(matches!(e, chord_engine::Error::InvalidArgument(_)));
    }
}

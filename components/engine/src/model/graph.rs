//! A forward step as a program: the operations of one step over a fixed set of activation
//! buffers ([`Buf`]), each `n` rows (one per token) of a width fixed per model.
//!
//! Each architecture writes its forward pass once, as operations given to an [`Emit`]:
//! - in the guest, [`Exec`] carries each one out as it is given (nothing recorded, nothing
//!   allocated);
//! - with a compute device that runs programs, [`Recorder`] records them once per session into a
//!   [`Program`] the device keeps. A step is then one call: the token embeddings in, the logits
//!   out; activations, weights and the KV cache stay on the device. The device runs the program
//!   with [`Runner`], over this same [`Step::exec`], so both give the same numbers bit for bit.
//!
//! A program comes from the guest: [`Program::check`] checks every width, index and length
//! before a device allocates anything for it, so a malformed one is an error, never a panic.

use super::ops::{self, AttnCfg, Rope};
use super::weights::Matrix;
use super::{Device, DeviceKv, DeviceMatrix, Model, RopeType, alloc, mul};
use crate::{Error, Result};
use std::sync::Arc;

/// An activation buffer of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buf {
    /// The residual stream `[n, n_embd]`.
    X,
    /// A block's normalized input `[n, n_embd]`.
    Xn,
    /// Fused Q/K/V projections `[n, q_dim + k_dim + v_dim]` (width 0 where none are fused).
    Qkv,
    /// Queries, keys, values `[n, q_dim]`, `[n, k_dim]`, `[n, v_dim]`.
    Q,
    K,
    V,
    /// Attention output `[n, n_head * head_dim_v]`.
    Att,
    /// A projection back to the residual width `[n, n_embd]`.
    O,
    /// Feed-forward gate `[n, n_ff]` (`[n, 2 * n_ff]` when gate and up are fused).
    Gate,
    /// Feed-forward up projection `[n, n_ff]`.
    Up,
}

/// Number of [`Buf`]s.
pub const N_BUFS: usize = 10;

impl Buf {
    /// Every buffer, in index order.
    pub const ALL: [Buf; N_BUFS] = [
        Buf::X,
        Buf::Xn,
        Buf::Qkv,
        Buf::Q,
        Buf::K,
        Buf::V,
        Buf::Att,
        Buf::O,
        Buf::Gate,
        Buf::Up,
    ];

    fn i(self) -> usize {
        self as usize
    }
}

/// Values per token of each buffer, indexed by [`Buf`].
pub type Widths = [usize; N_BUFS];

/// Most RoPEs one program declares (Gemma 3: sliding-window and global layers).
pub const MAX_ROPES: usize = 2;

/// The gated activation of a feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glu {
    /// `gate = silu(gate) * up` (`ggml_swiglu`).
    Silu,
    /// `gate = gelu_tanh(gate) * up` (`ggml_geglu`, through ggml's f16 table).
    GeluTanh,
    /// `up = silu(gate[.. n_ff]) * gate[n_ff ..]`: gate and up from one fused matrix (Phi-3).
    SiluFused,
}

/// One operation of a step. `M` names a weight matrix, `P` holds a vector of parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<M, P> {
    /// `x *= s`.
    Scale { x: Buf, s: f32 },
    /// `out = rmsnorm(x) * w`, over rows of `w.len()` values (`out` may be `x`).
    RmsNorm { out: Buf, x: Buf, w: P, eps: f32 },
    /// `out = x · wᵀ`: `[n, w.n_cols] → [n, w.n_rows]`.
    MatMul { out: Buf, x: Buf, w: M },
    /// `x += b` on every row.
    AddBias { x: Buf, b: P },
    /// Each row of [`Buf::Qkv`] split into its [`Buf::Q`], [`Buf::K`] and [`Buf::V`] parts.
    SplitQkv,
    /// Every head of `head_dim` values of `x` rotated by its token's position with RoPE `rope`.
    Rope {
        x: Buf,
        rope: usize,
        head_dim: usize,
    },
    /// Layer `layer`'s keys and values ([`Buf::K`], [`Buf::V`]) stored in the KV cache, then
    /// [`Buf::Att`] = attention of the queries [`Buf::Q`] over it.
    Attend { layer: usize, attn: AttnCfg },
    /// `x += y`.
    Add { x: Buf, y: Buf },
    /// The feed-forward block's gated activation.
    Glu(Glu),
    /// `logits = rmsnorm(x) * norm · wᵀ (+ b)` for the rows the step asks for (through
    /// [`Buf::Xn`]), soft-capped if `softcap`.
    Logits {
        norm: P,
        eps: f32,
        w: M,
        b: Option<P>,
        softcap: Option<f32>,
    },
}

/// Short forms, so that a forward pass reads a line per operation.
impl<M, P> Op<M, P> {
    pub fn scale(x: Buf, s: f32) -> Self {
        Op::Scale { x, s }
    }

    pub fn rms_norm(out: Buf, x: Buf, w: P, eps: f32) -> Self {
        Op::RmsNorm { out, x, w, eps }
    }

    pub fn matmul(out: Buf, x: Buf, w: M) -> Self {
        Op::MatMul { out, x, w }
    }

    pub fn add_bias(x: Buf, b: P) -> Self {
        Op::AddBias { x, b }
    }

    pub fn rope(x: Buf, rope: usize, head_dim: usize) -> Self {
        Op::Rope { x, rope, head_dim }
    }

    pub fn attend(layer: usize, attn: AttnCfg) -> Self {
        Op::Attend { layer, attn }
    }

    pub fn add(x: Buf, y: Buf) -> Self {
        Op::Add { x, y }
    }
}

/// Which rows of a step produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    None,
    Last,
    All,
}

impl Rows {
    /// The first row with logits and how many there are, of a step of `n` tokens.
    pub fn range(self, n: usize) -> (usize, usize) {
        match self {
            Rows::None => (n, 0),
            Rows::Last => (n.saturating_sub(1), n.min(1)),
            Rows::All => (0, n),
        }
    }
}

/// A RoPE a program owns (its frequency factors copied).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeDef {
    pub n_rot: usize,
    pub ty: RopeType,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub factors: Option<Vec<f32>>,
    pub attn_factor: f32,
}

impl RopeDef {
    pub fn new(r: &Rope<'_>) -> RopeDef {
        RopeDef {
            n_rot: r.n_rot,
            ty: r.ty,
            freq_base: r.freq_base,
            freq_scale: r.freq_scale,
            factors: r.factors.map(<[f32]>::to_vec),
            attn_factor: r.attn_factor,
        }
    }

    pub fn rope(&self) -> Rope<'_> {
        Rope {
            n_rot: self.n_rot,
            ty: self.ty,
            freq_base: self.freq_base,
            freq_scale: self.freq_scale,
            factors: self.factors.as_deref(),
            attn_factor: self.attn_factor,
        }
    }
}

/// A recorded forward step.
#[derive(Debug, Clone, PartialEq)]
pub struct Program<M, P> {
    /// Values per token of each buffer.
    pub widths: Widths,
    /// Values per row of logits.
    pub n_vocab: usize,
    pub ropes: Vec<RopeDef>,
    pub ops: Vec<Op<M, P>>,
}

/// The shape of a weight matrix, as a program checks it.
pub trait MatrixShape {
    /// Inputs per row (`k`) and rows (outputs).
    fn shape(&self) -> (usize, usize);
}

impl MatrixShape for Arc<dyn DeviceMatrix> {
    fn shape(&self) -> (usize, usize) {
        (**self).shape()
    }
}

/// What computes a step's products and attention.
pub trait Backend<M> {
    /// `out = x · wᵀ` for `n` rows of `x`; `same_input`: `x` is the input of the previous
    /// product, unchanged (its quantization may be reused).
    fn matmul(
        &mut self,
        w: &M,
        x: &[f32],
        n: usize,
        same_input: bool,
        out: &mut [f32],
    ) -> Result<()>;

    /// Stores the keys and values of `n` tokens at `pos0 ..` of layer `il` and writes their
    /// queries' attention to `out`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &mut self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()>;
}

fn bad<T>(m: String) -> Result<T> {
    Err(Error::InvalidArgument(m))
}

impl<M: MatrixShape, P: AsRef<[f32]>> Program<M, P> {
    /// Checks every operation against the buffer widths, so that [`Step::exec`] can slice
    /// without checking; also that a [`Rows`] step writes only logits rows of `n_vocab`.
    pub fn check(&self) -> Result<()> {
        let w = |b: Buf| self.widths[b.i()];
        if w(Buf::X) == 0 || self.n_vocab == 0 {
            return bad(format!(
                "a program over {} embedding values and {} logits",
                w(Buf::X),
                self.n_vocab
            ));
        }
        if self.ropes.len() > MAX_ROPES {
            return bad(format!("{} RoPEs (at most {MAX_ROPES})", self.ropes.len()));
        }
        // Every table is computed each step, named or not.
        for r in &self.ropes {
            r.rope().check(r.n_rot)?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            let fail = |m: String| bad(format!("operation {i} ({}): {m}", op_name(op)));
            match op {
                Op::Scale { .. } => {}
                Op::RmsNorm { out, x, w: nw, .. } => {
                    let r = nw.as_ref().len();
                    if r == 0 || w(*x) % r != 0 || w(*out) != w(*x) {
                        return fail(format!("rows of {r} in {} → {}", w(*x), w(*out)));
                    }
                }
                Op::MatMul { out, x, w: m } => {
                    let (k, rows) = m.shape();
                    if out == x || k != w(*x) || rows != w(*out) {
                        return fail(format!(
                            "a {rows}x{k} matrix from {x:?} ({}) to {out:?} ({})",
                            w(*x),
                            w(*out)
                        ));
                    }
                }
                Op::AddBias { x, b } => {
                    if b.as_ref().len() != w(*x) {
                        return fail(format!("{} biases for {}", b.as_ref().len(), w(*x)));
                    }
                }
                Op::SplitQkv => {
                    let parts = w(Buf::Q) + w(Buf::K) + w(Buf::V);
                    if w(Buf::Qkv) != parts {
                        return fail(format!("{} into {parts}", w(Buf::Qkv)));
                    }
                }
                Op::Rope { x, rope, head_dim } => {
                    let Some(r) = self.ropes.get(*rope) else {
                        return fail(format!("RoPE {rope} of {}", self.ropes.len()));
                    };
                    if *head_dim == 0 || w(*x) % head_dim != 0 {
                        return fail(format!("heads of {head_dim} in {}", w(*x)));
                    }
                    r.rope().check(*head_dim)?;
                }
                Op::Attend { attn: c, .. } => {
                    let dims = |a: usize, b: usize| a.saturating_mul(b);
                    if c.n_head_kv == 0
                        || c.n_head % c.n_head_kv != 0
                        || dims(c.n_head, c.head_dim_k) != w(Buf::Q)
                        || dims(c.n_head_kv, c.head_dim_k) != w(Buf::K)
                        || dims(c.n_head_kv, c.head_dim_v) != w(Buf::V)
                        || dims(c.n_head, c.head_dim_v) != w(Buf::Att)
                    {
                        return fail(format!("{c:?} over the buffers' widths"));
                    }
                }
                Op::Add { x, y } => {
                    if x == y || w(*x) != w(*y) {
                        return fail(format!("{} += {}", w(*x), w(*y)));
                    }
                }
                Op::Glu(g) => {
                    let gate = match g {
                        Glu::Silu | Glu::GeluTanh => w(Buf::Up),
                        Glu::SiluFused => 2 * w(Buf::Up),
                    };
                    if w(Buf::Gate) != gate {
                        return fail(format!(
                            "{g:?} with gate {} for up {}",
                            w(Buf::Gate),
                            w(Buf::Up)
                        ));
                    }
                }
                Op::Logits { norm, w: m, b, .. } => {
                    let d = w(Buf::X);
                    if norm.as_ref().len() != d
                        || w(Buf::Xn) != d
                        || m.shape() != (d, self.n_vocab)
                        || b.as_ref().is_some_and(|b| b.as_ref().len() != self.n_vocab)
                    {
                        return fail(format!(
                            "a {:?} head over {d} values into {} logits",
                            m.shape(),
                            self.n_vocab
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn op_name<M, P>(op: &Op<M, P>) -> &'static str {
    match op {
        Op::Scale { .. } => "scale",
        Op::RmsNorm { .. } => "rms-norm",
        Op::MatMul { .. } => "matmul",
        Op::AddBias { .. } => "add-bias",
        Op::SplitQkv => "split-qkv",
        Op::Rope { .. } => "rope",
        Op::Attend { .. } => "attend",
        Op::Add { .. } => "add",
        Op::Glu(_) => "glu",
        Op::Logits { .. } => "logits",
    }
}

/// What a forward pass gives its operations to.
pub(crate) trait Emit<'w> {
    /// Declares a RoPE for this step's positions; the result names it in [`Op::Rope`].
    fn rope(&mut self, r: Rope<'w>) -> Result<usize>;
    /// One operation.
    fn op(&mut self, op: Op<&Matrix, &[f32]>) -> Result<()>;
}

/// A step's buffers and where it is.
pub(crate) struct Step<'s> {
    bufs: &'s mut [Vec<f32>; N_BUFS],
    tables: &'s mut [Vec<f32>; MAX_ROPES],
    widths: Widths,
    n: usize,
    pos0: usize,
    rows: Rows,
    logits: &'s mut [f32],
    /// The buffer the last product multiplied, unless written since.
    acts_of: Option<Buf>,
}

impl Step<'_> {
    fn rows(&mut self, b: Buf) -> &mut [f32] {
        &mut self.bufs[b.i()][..self.n * self.widths[b.i()]]
    }

    /// `a` to write and `b` to read (`a != b`).
    fn pair(&mut self, a: Buf, b: Buf) -> Result<(&mut [f32], &[f32])> {
        let (n, wa, wb) = (self.n, self.widths[a.i()], self.widths[b.i()]);
        match self.bufs.get_disjoint_mut([a.i(), b.i()]) {
            Ok([x, y]) => Ok((&mut x[..n * wa], &y[..n * wb])),
            Err(_) => bad(format!("{a:?} is both written and read")),
        }
    }

    /// Writes the cos/sin table of `rope` (number `i`) for this step's positions.
    fn table(&mut self, i: usize, rope: &Rope<'_>) {
        let nr = rope.n_rot;
        rope.table(self.pos0, self.n, &mut self.tables[i][..self.n * nr]);
    }

    /// Carries out `op`, the RoPEs it names being `ropes`.
    pub(crate) fn exec<M, P: AsRef<[f32]>>(
        &mut self,
        be: &mut impl Backend<M>,
        ropes: &[Option<Rope<'_>>; MAX_ROPES],
        op: &Op<M, P>,
    ) -> Result<()> {
        let n = self.n;
        let written = match op {
            Op::Scale { x, s } => {
                ops::scale(self.rows(*x), *s);
                *x
            }
            Op::RmsNorm { out, x, w, eps } => {
                if out == x {
                    ops::rms_norm(self.rows(*x), w.as_ref(), *eps);
                } else {
                    let (o, i) = self.pair(*out, *x)?;
                    ops::rms_norm_to(i, w.as_ref(), *eps, o);
                }
                *out
            }
            Op::MatMul { out, x, w } => {
                let same = self.acts_of == Some(*x);
                let (o, i) = self.pair(*out, *x)?;
                be.matmul(w, i, n, same, o)?;
                self.acts_of = Some(*x);
                *out
            }
            Op::AddBias { x, b } => {
                ops::add_bias(self.rows(*x), b.as_ref());
                *x
            }
            Op::SplitQkv => {
                let [wq, wk, wv] = [Buf::Q, Buf::K, Buf::V].map(|b| self.widths[b.i()]);
                let total = self.widths[Buf::Qkv.i()];
                let [f, q, k, v] = self
                    .bufs
                    .get_disjoint_mut([Buf::Qkv, Buf::Q, Buf::K, Buf::V].map(Buf::i))
                    .map_err(|_| Error::InvalidArgument("split".into()))?;
                // ggml views of the fused output: [q | k | v] per row.
                for t in 0..n {
                    let row = &f[t * total..(t + 1) * total];
                    q[t * wq..(t + 1) * wq].copy_from_slice(&row[..wq]);
                    k[t * wk..(t + 1) * wk].copy_from_slice(&row[wq..wq + wk]);
                    v[t * wv..(t + 1) * wv].copy_from_slice(&row[wq + wk..]);
                }
                if matches!(self.acts_of, Some(Buf::Q | Buf::K | Buf::V)) {
                    self.acts_of = None;
                }
                return Ok(());
            }
            Op::Rope { x, rope, head_dim } => {
                let Some(Some(r)) = ropes.get(*rope) else {
                    return bad(format!("RoPE {rope} was not declared"));
                };
                let (width, nr) = (self.widths[x.i()], r.n_rot);
                let (bufs, tables) = (&mut *self.bufs, &*self.tables);
                let xs = &mut bufs[x.i()];
                for t in 0..n {
                    r.apply(
                        &mut xs[t * width..(t + 1) * width],
                        *head_dim,
                        &tables[*rope][t * nr..(t + 1) * nr],
                    );
                }
                *x
            }
            Op::Attend { layer, attn } => {
                let [att, q, k, v] = self
                    .bufs
                    .get_disjoint_mut([Buf::Att, Buf::Q, Buf::K, Buf::V].map(Buf::i))
                    .map_err(|_| Error::InvalidArgument("attend".into()))?;
                let w = |b: Buf| n * self.widths[b.i()];
                be.attend(
                    *layer,
                    attn,
                    self.pos0,
                    n,
                    &q[..w(Buf::Q)],
                    &k[..w(Buf::K)],
                    &v[..w(Buf::V)],
                    &mut att[..w(Buf::Att)],
                )?;
                Buf::Att
            }
            Op::Add { x, y } => {
                let (a, b) = self.pair(*x, *y)?;
                ops::add_assign(a, b);
                *x
            }
            Op::Glu(g) => {
                let ff = self.widths[Buf::Up.i()];
                let [gate, up] = self
                    .bufs
                    .get_disjoint_mut([Buf::Gate.i(), Buf::Up.i()])
                    .map_err(|_| Error::InvalidArgument("glu".into()))?;
                match g {
                    Glu::Silu => ops::swiglu(&mut gate[..n * ff], &up[..n * ff]),
                    Glu::GeluTanh => ops::geglu(&mut gate[..n * ff], &up[..n * ff]),
                    // ggml_swiglu on the fused halves.
                    Glu::SiluFused => {
                        for t in 0..n {
                            let (g, u) = gate[t * 2 * ff..(t + 1) * 2 * ff].split_at(ff);
                            let h = &mut up[t * ff..(t + 1) * ff];
                            h.copy_from_slice(g);
                            ops::swiglu(h, u);
                        }
                    }
                }
                if *g == Glu::SiluFused {
                    Buf::Up
                } else {
                    Buf::Gate
                }
            }
            Op::Logits {
                norm,
                eps,
                w,
                b,
                softcap,
            } => {
                let (first, n_out) = self.rows.range(n);
                if n_out == 0 {
                    return Ok(());
                }
                let d = self.widths[Buf::X.i()];
                let [xn, x] = self
                    .bufs
                    .get_disjoint_mut([Buf::Xn.i(), Buf::X.i()])
                    .map_err(|_| Error::InvalidArgument("logits".into()))?;
                ops::rms_norm_to(&x[first * d..n * d], norm.as_ref(), *eps, xn);
                let n_vocab = self.logits.len() / n_out;
                let logits = &mut self.logits[..n_out * n_vocab];
                be.matmul(w, &xn[..n_out * d], n_out, false, logits)?;
                if let Some(b) = b {
                    ops::add_bias(logits, b.as_ref());
                }
                if let Some(cap) = softcap {
                    ops::softcap(logits, *cap);
                }
                // The product's input had n_out rows, not n.
                self.acts_of = None;
                return Ok(());
            }
        };
        if self.acts_of == Some(written) {
            self.acts_of = None;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// In the guest: each operation carried out as it is given.

/// The guest's [`Backend`]: products through [`ops::matmul`] (on the matrices' device, if they
/// have one) and attention over the session's cache.
struct Local<'a> {
    acts: &'a mut ops::Acts,
    kv: &'a mut super::kv_cache::Kv,
    attn: &'a mut ops::AttnScratch,
}

impl Backend<&Matrix> for Local<'_> {
    fn matmul(
        &mut self,
        w: &&Matrix,
        x: &[f32],
        n: usize,
        same_input: bool,
        out: &mut [f32],
    ) -> Result<()> {
        if !same_input {
            self.acts.set(x, n, w.n_cols)?;
        }
        ops::matmul(w, self.acts, out)
    }

    fn attend(
        &mut self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.kv.attend(il, cfg, pos0, n, (q, k, v), self.attn, out)
    }
}

/// Runs a forward pass's operations as they are given.
pub(crate) struct Exec<'s, 'w> {
    step: Step<'s>,
    be: Local<'s>,
    ropes: [Option<Rope<'w>>; MAX_ROPES],
}

impl<'s> Exec<'s, '_> {
    /// A step of the `n` tokens whose embeddings are in `s`'s [`Buf::X`], at `pos0 ..`.
    pub fn new(
        m: &Model,
        s: &'s mut super::Scratch,
        kv: &'s mut super::kv_cache::Kv,
        pos0: usize,
        n: usize,
        rows: Rows,
        logits: &'s mut [f32],
    ) -> Self {
        let super::Scratch {
            bufs,
            tables,
            acts,
            attn,
            ..
        } = s;
        Exec {
            step: Step {
                bufs,
                tables,
                widths: m.widths(),
                n,
                pos0,
                rows,
                logits,
                acts_of: None,
            },
            be: Local { acts, kv, attn },
            ropes: [None, None],
        }
    }
}

impl<'w> Emit<'w> for Exec<'_, 'w> {
    fn rope(&mut self, r: Rope<'w>) -> Result<usize> {
        let Some(i) = self.ropes.iter().position(Option::is_none) else {
            return bad(format!("more than {MAX_ROPES} RoPEs"));
        };
        self.step.table(i, &r);
        self.ropes[i] = Some(r);
        Ok(i)
    }

    fn op(&mut self, op: Op<&Matrix, &[f32]>) -> Result<()> {
        self.step.exec(&mut self.be, &self.ropes, &op)
    }
}

// ---------------------------------------------------------------------------------------------
// On a device: recorded once, run each step.

/// A program as a device receives it: its matrices are the device's own.
pub type DeviceProgram = Program<Arc<dyn DeviceMatrix>, Vec<f32>>;

/// Records a forward pass whose matrices are all on a device.
pub(crate) struct Recorder {
    prog: DeviceProgram,
}

impl Recorder {
    pub fn new(m: &Model) -> Recorder {
        Recorder {
            prog: Program {
                widths: m.widths(),
                n_vocab: m.hparams().n_vocab,
                ropes: Vec::new(),
                ops: Vec::new(),
            },
        }
    }

    pub fn finish(self) -> DeviceProgram {
        self.prog
    }
}

fn on_device(w: &Matrix) -> Result<Arc<dyn DeviceMatrix>> {
    w.device.clone().ok_or_else(|| {
        Error::Unsupported(format!("a program with {w:?}, which is not on the device"))
    })
}

impl<'w> Emit<'w> for Recorder {
    fn rope(&mut self, r: Rope<'w>) -> Result<usize> {
        if self.prog.ropes.len() == MAX_ROPES {
            return bad(format!("more than {MAX_ROPES} RoPEs"));
        }
        self.prog.ropes.push(RopeDef::new(&r));
        Ok(self.prog.ropes.len() - 1)
    }

    fn op(&mut self, op: Op<&Matrix, &[f32]>) -> Result<()> {
        let v = |p: &[f32]| p.to_vec();
        self.prog.ops.push(match op {
            Op::Scale { x, s } => Op::Scale { x, s },
            Op::RmsNorm { out, x, w, eps } => Op::RmsNorm {
                out,
                x,
                w: v(w),
                eps,
            },
            Op::MatMul { out, x, w } => Op::MatMul {
                out,
                x,
                w: on_device(w)?,
            },
            Op::AddBias { x, b } => Op::AddBias { x, b: v(b) },
            Op::SplitQkv => Op::SplitQkv,
            Op::Rope { x, rope, head_dim } => Op::Rope { x, rope, head_dim },
            Op::Attend { layer, attn } => Op::Attend { layer, attn },
            Op::Add { x, y } => Op::Add { x, y },
            Op::Glu(g) => Op::Glu(g),
            Op::Logits {
                norm,
                eps,
                w,
                b,
                softcap,
            } => Op::Logits {
                norm: v(norm),
                eps,
                w: on_device(w)?,
                b: b.map(v),
                softcap,
            },
        });
        Ok(())
    }
}

/// A device's [`Backend`]: its own matrices, and the session's cache on it.
struct OnDevice<'a> {
    kv: &'a mut dyn DeviceKv,
}

impl Backend<Arc<dyn DeviceMatrix>> for OnDevice<'_> {
    fn matmul(
        &mut self,
        w: &Arc<dyn DeviceMatrix>,
        x: &[f32],
        n: usize,
        same_input: bool,
        out: &mut [f32],
    ) -> Result<()> {
        if same_input {
            w.matmul_same_input(x, n, out)
        } else {
            w.matmul(x, n, out)
        }
    }

    fn attend(
        &mut self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.kv.attend(il, cfg, pos0, n, q, k, v, out)
    }
}

/// A checked program with its buffers, run a step at a time by a device.
pub struct Runner {
    prog: DeviceProgram,
    max_tokens: usize,
    bufs: [Vec<f32>; N_BUFS],
    tables: [Vec<f32>; MAX_ROPES],
}

impl Runner {
    /// The bytes a runner of `prog` for steps of up to `max_tokens` tokens allocates, or an
    /// error if it is not a valid program.
    pub fn bytes(prog: &DeviceProgram, max_tokens: usize) -> Result<usize> {
        prog.check()?;
        if max_tokens == 0 {
            return bad("steps of at most 0 tokens".into());
        }
        let mut values = 0usize;
        for w in prog.widths {
            values = values
                .checked_add(mul(w, max_tokens, "program buffers")?)
                .ok_or_else(|| Error::OutOfMemory("program buffers".into()))?;
        }
        for r in &prog.ropes {
            values = values.saturating_add(mul(r.n_rot, max_tokens, "RoPE table")?);
        }
        let params: usize = prog
            .ops
            .iter()
            .map(|op| match op {
                Op::RmsNorm { w, .. } => w.len(),
                Op::AddBias { b, .. } => b.len(),
                Op::Logits { norm, b, .. } => norm.len() + b.as_ref().map_or(0, Vec::len),
                _ => 0,
            })
            .fold(0usize, usize::saturating_add);
        mul(values.saturating_add(params), 4, "program")
    }

    /// Checks `prog` and allocates its buffers for steps of up to `max_tokens` tokens.
    pub fn new(prog: DeviceProgram, max_tokens: usize) -> Result<Runner> {
        Runner::bytes(&prog, max_tokens)?;
        let buf = |w: usize| alloc(w * max_tokens, "program buffer");
        let mut bufs: [Vec<f32>; N_BUFS] = Default::default();
        for (b, &w) in bufs.iter_mut().zip(&prog.widths) {
            *b = buf(w)?;
        }
        let mut tables: [Vec<f32>; MAX_ROPES] = Default::default();
        for (t, r) in tables.iter_mut().zip(&prog.ropes) {
            *t = buf(r.n_rot)?;
        }
        Ok(Runner {
            prog,
            max_tokens,
            bufs,
            tables,
        })
    }

    /// Values per row of logits.
    pub fn n_vocab(&self) -> usize {
        self.prog.n_vocab
    }

    /// Most tokens in one step.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Runs one step of `n` tokens at positions `pos0 ..` whose embeddings are `x`
    /// (`[n, n_embd]`), over the session's cache `kv`; writes the logits of `rows` to `logits`
    /// (`[rows, n_vocab]`).
    pub fn run(
        &mut self,
        kv: &mut dyn DeviceKv,
        pos0: usize,
        n: usize,
        x: &[f32],
        rows: Rows,
        logits: &mut [f32],
    ) -> Result<()> {
        let d = self.prog.widths[Buf::X.i()];
        let n_out = rows.range(n).1;
        if n == 0 || n > self.max_tokens || x.len() != n * d {
            return bad(format!(
                "a step of {n} tokens (at most {}) with {} embedding values ({d} each)",
                self.max_tokens,
                x.len()
            ));
        }
        if logits.len() != n_out * self.prog.n_vocab {
            return bad(format!(
                "{} logits for {n_out} rows of {}",
                logits.len(),
                self.prog.n_vocab
            ));
        }
        self.bufs[Buf::X.i()][..n * d].copy_from_slice(x);
        let mut ropes: [Option<Rope<'_>>; MAX_ROPES] = [None, None];
        for (slot, r) in ropes.iter_mut().zip(&self.prog.ropes) {
            *slot = Some(r.rope());
        }
        let mut step = Step {
            bufs: &mut self.bufs,
            tables: &mut self.tables,
            widths: self.prog.widths,
            n,
            pos0,
            rows,
            logits,
            acts_of: None,
        };
        for (i, r) in ropes.iter().enumerate() {
            if let Some(r) = r {
                step.table(i, r);
            }
        }
        let mut be = OnDevice { kv };
        for op in &self.prog.ops {
            step.exec(&mut be, &ropes, op)?;
        }
        Ok(())
    }
}

/// A program a device keeps for one session.
pub trait DeviceRun: Send {
    /// [`Runner::run`] on the device, over the session's cache there.
    fn run(
        &mut self,
        kv: &mut dyn DeviceKv,
        pos0: usize,
        n: usize,
        x: &[f32],
        rows: Rows,
        logits: &mut [f32],
    ) -> Result<()>;
}

impl DeviceRun for Runner {
    fn run(
        &mut self,
        kv: &mut dyn DeviceKv,
        pos0: usize,
        n: usize,
        x: &[f32],
        rows: Rows,
        logits: &mut [f32],
    ) -> Result<()> {
        Runner::run(self, kv, pos0, n, x, rows, logits)
    }
}

/// Records `m`'s forward step and hands it to `device`, or `None` if the device does not run
/// programs (or a matrix is not on it).
pub(crate) fn program_on(
    m: &Model,
    device: &dyn Device,
    n_ctx: usize,
    flash: bool,
    max_tokens: usize,
) -> Result<Option<Box<dyn DeviceRun>>> {
    let mut rec = Recorder::new(m);
    match m.emit(&mut rec, n_ctx, flash) {
        Ok(()) => {}
        Err(Error::Unsupported(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    device.program(rec.finish(), max_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttnScratch, KvCache, KvShape};

    /// A matrix of the given shape whose products are `x · (i + 1) / 100` per output row `i`.
    struct Fake(usize, usize);

    impl DeviceMatrix for Fake {
        fn shape(&self) -> (usize, usize) {
            (self.0, self.1)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
            let (k, m) = (self.0, self.1);
            for t in 0..n {
                let s: f32 = x[t * k..(t + 1) * k].iter().sum();
                for (i, o) in out[t * m..(t + 1) * m].iter_mut().enumerate() {
                    *o = s * (i + 1) as f32 / 100.0;
                }
            }
            Ok(())
        }
    }

    /// The engine's cache as a device cache.
    struct Kv(KvCache, AttnScratch);

    impl DeviceKv for Kv {
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
        fn attend(
            &mut self,
            il: usize,
            cfg: &AttnCfg,
            pos0: usize,
            n: usize,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            out: &mut [f32],
        ) -> Result<()> {
            self.0.check(il, cfg, pos0, n, q, k, v)?;
            self.0.store(il, pos0, n, k, v)?;
            let part = ops::AttnPart::all(n, cfg.n_head);
            self.0.attend(il, cfg, q, pos0, n, &part, &mut self.1, out)
        }
        fn shift(&mut self, _: usize, _: usize, _: usize, _: &[Rope<'_>]) -> Result<()> {
            Ok(())
        }
    }

    const D: usize = 8;
    const VOCAB: usize = 10;

    fn kv() -> Kv {
        let shape = KvShape {
            n_layer: 1,
            n_ctx: 16,
            n_head_kv: 2,
            head_dim_k: 4,
            head_dim_v: 4,
        };
        Kv(
            KvCache::new(&shape).unwrap(),
            AttnScratch::new(16, 4, 4).unwrap(),
        )
    }

    /// One llama-like layer and the head, over widths d 8, 2 heads of 4, ff 16.
    fn program() -> DeviceProgram {
        let m = |k: usize, r: usize| -> Arc<dyn DeviceMatrix> { Arc::new(Fake(k, r)) };
        let attn = AttnCfg {
            n_head: 2,
            n_head_kv: 2,
            head_dim_k: 4,
            head_dim_v: 4,
            kq_scale: 0.5,
            softcap: None,
            window: 0,
            flash: false,
        };
        use Buf::*;
        Program {
            widths: [D, D, 0, 8, 8, 8, 8, D, 16, 16],
            n_vocab: VOCAB,
            ropes: vec![RopeDef {
                n_rot: 4,
                ty: RopeType::Normal,
                freq_base: 10000.0,
                freq_scale: 1.0,
                factors: None,
                attn_factor: 1.0,
            }],
            ops: vec![
                Op::RmsNorm {
                    out: Xn,
                    x: X,
                    w: vec![1.0; D],
                    eps: 1e-5,
                },
                Op::MatMul {
                    out: Q,
                    x: Xn,
                    w: m(D, 8),
                },
                Op::MatMul {
                    out: K,
                    x: Xn,
                    w: m(D, 8),
                },
                Op::MatMul {
                    out: V,
                    x: Xn,
                    w: m(D, 8),
                },
                Op::AddBias {
                    x: V,
                    b: vec![0.25; 8],
                },
                Op::Rope {
                    x: Q,
                    rope: 0,
                    head_dim: 4,
                },
                Op::Rope {
                    x: K,
                    rope: 0,
                    head_dim: 4,
                },
                Op::Attend { layer: 0, attn },
                Op::MatMul {
                    out: O,
                    x: Att,
                    w: m(8, D),
                },
                Op::Add { x: X, y: O },
                Op::MatMul {
                    out: Gate,
                    x: Xn,
                    w: m(D, 16),
                },
                Op::MatMul {
                    out: Up,
                    x: Xn,
                    w: m(D, 16),
                },
                Op::Glu(Glu::Silu),
                Op::Scale { x: Gate, s: 0.5 },
                Op::MatMul {
                    out: O,
                    x: Gate,
                    w: m(16, D),
                },
                Op::Add { x: X, y: O },
                Op::Logits {
                    norm: vec![1.0; D],
                    eps: 1e-5,
                    w: m(D, VOCAB),
                    b: Some(vec![0.5; VOCAB]),
                    softcap: Some(30.0),
                },
            ],
        }
    }

    #[test]
    fn a_program_runs_and_its_rows_are_the_ones_asked_for() {
        let mut r = Runner::new(program(), 4).unwrap();
        let mut kv = kv();
        let x: Vec<f32> = (0..3 * D).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut all = vec![f32::NAN; 3 * VOCAB];
        r.run(&mut kv, 0, 3, &x, Rows::All, &mut all).unwrap();
        assert!(all.iter().all(|v| v.is_finite()));
        // The same tokens again at the same positions: the last row alone is the same.
        let mut last = vec![f32::NAN; VOCAB];
        r.run(&mut kv, 0, 3, &x, Rows::Last, &mut last).unwrap();
        assert_eq!(last, all[2 * VOCAB..]);
        r.run(&mut kv, 3, 1, &x[..D], Rows::None, &mut []).unwrap();
    }

    /// Every malformed program is refused before anything is allocated for it, and every
    /// malformed step is an error: never a panic.
    #[test]
    fn malformed_programs_and_steps_are_errors() {
        type Spoil = Box<dyn Fn(&mut DeviceProgram)>;
        let bad_programs: Vec<(&str, Spoil)> = vec![
            ("no embedding", Box::new(|p| p.widths[0] = 0)),
            ("no vocabulary", Box::new(|p| p.n_vocab = 0)),
            ("a wider norm", Box::new(|p| p.widths[Buf::Xn.i()] = 9)),
            (
                "three RoPEs",
                Box::new(|p| p.ropes = vec![p.ropes[0].clone(); 3]),
            ),
            ("an odd RoPE", Box::new(|p| p.ropes[0].n_rot = 3)),
            (
                "too few RoPE factors",
                Box::new(|p| p.ropes[0].factors = Some(vec![1.0])),
            ),
            ("a wider query", Box::new(|p| p.widths[Buf::Q.i()] = 12)),
            (
                "a gate for a fused up",
                Box::new(|p| p.ops[12] = Op::Glu(Glu::SiluFused)),
            ),
            (
                "a split without a fused buffer",
                Box::new(|p| p.ops[1] = Op::SplitQkv),
            ),
            (
                "an undeclared RoPE",
                Box::new(|p| {
                    p.ops[5] = Op::Rope {
                        x: Buf::Q,
                        rope: 1,
                        head_dim: 4,
                    }
                }),
            ),
            (
                "heads that do not divide",
                Box::new(|p| {
                    p.ops[5] = Op::Rope {
                        x: Buf::Q,
                        rope: 0,
                        head_dim: 3,
                    }
                }),
            ),
            (
                "a product in place",
                Box::new(|p| {
                    p.ops[1] = Op::MatMul {
                        out: Buf::Xn,
                        x: Buf::Xn,
                        w: Arc::new(Fake(D, D)),
                    }
                }),
            ),
            (
                "a matrix of the wrong shape",
                Box::new(|p| {
                    p.ops[1] = Op::MatMul {
                        out: Buf::Q,
                        x: Buf::Xn,
                        w: Arc::new(Fake(D, 7)),
                    }
                }),
            ),
            (
                "a short bias",
                Box::new(|p| {
                    p.ops[4] = Op::AddBias {
                        x: Buf::V,
                        b: vec![0.0; 3],
                    }
                }),
            ),
            (
                "an empty norm",
                Box::new(|p| {
                    p.ops[0] = Op::RmsNorm {
                        out: Buf::Xn,
                        x: Buf::X,
                        w: Vec::new(),
                        eps: 1e-5,
                    }
                }),
            ),
            (
                "a norm that does not divide",
                Box::new(|p| {
                    p.ops[0] = Op::RmsNorm {
                        out: Buf::Xn,
                        x: Buf::X,
                        w: vec![1.0; 3],
                        eps: 1e-5,
                    }
                }),
            ),
            (
                "a sum with itself",
                Box::new(|p| {
                    p.ops[9] = Op::Add {
                        x: Buf::X,
                        y: Buf::X,
                    }
                }),
            ),
            (
                "attention over heads that do not group",
                Box::new(|p| {
                    if let Op::Attend { attn, .. } = &mut p.ops[7] {
                        attn.n_head_kv = 0;
                    }
                }),
            ),
            (
                "a head of the wrong size",
                Box::new(|p| {
                    if let Some(Op::Logits { w, .. }) = p.ops.last_mut() {
                        *w = Arc::new(Fake(D, VOCAB + 1));
                    }
                }),
            ),
        ];
        for (what, spoil) in &bad_programs {
            let mut p = program();
            spoil(&mut p);
            let e = Runner::new(p, 4).err();
            assert!(e.is_some(), "{what}: accepted");
            println!(
                "{what}: {}",
                e.unwrap_or(Error::InvalidArgument(String::new()))
            );
        }
        assert!(Runner::new(program(), 0).is_err());
        // Sizes that overflow are refused, not wrapped.
        assert!(Runner::bytes(&program(), usize::MAX / 2).is_err());

        let mut r = Runner::new(program(), 4).unwrap();
        let mut kv = kv();
        let x = vec![0.5; 5 * D];
        let mut logits = vec![0.0; 5 * VOCAB];
        let mut step = |pos0, n, x: &[f32], rows, out: &mut [f32]| {
            r.run(&mut kv, pos0, n, x, rows, out).unwrap_err()
        };
        println!("{}", step(0, 0, &[], Rows::All, &mut [])); // no tokens
        println!("{}", step(0, 5, &x, Rows::All, &mut logits)); // more than max_tokens
        println!("{}", step(0, 2, &x[..D], Rows::Last, &mut logits[..VOCAB])); // short x
        println!("{}", step(0, 1, &x[..D], Rows::All, &mut logits[..3])); // short logits
        println!(
            "{}",
            step(15, 2, &x[..2 * D], Rows::Last, &mut logits[..VOCAB])
        ); // past n_ctx
        println!(
            "{}",
            step(usize::MAX, 1, &x[..D], Rows::Last, &mut logits[..VOCAB])
        );
        let mut other_layer = program();
        if let Op::Attend { layer, .. } = &mut other_layer.ops[7] {
            *layer = 1;
        }
        let mut r = Runner::new(other_layer, 4).unwrap();
        let e = r.run(&mut kv, 0, 1, &x[..D], Rows::Last, &mut logits[..VOCAB]);
        println!("{}", e.unwrap_err()); // no layer 1 in the cache
    }
}

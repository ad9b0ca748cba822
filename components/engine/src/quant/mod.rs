//! Quantized tensor types, bit-compatible with ggml (llama.cpp).
//!
//! Each type lives in its own file with one `#[repr(C)]` block struct, a scalar reference
//! (`mod scalar`) and, side by side under the same names, SIMD kernels (`mod avx2` on x86_64,
//! chosen at run time; `mod simd128` on wasm32 built with `+simd128`; `mod neon` on aarch64,
//! where NEON is always there). The scalar code ports ggml's reference/generic functions; the
//! SIMD code ports the x86 and ARM kernels of `ggml-cpu/arch/*/quants.c` (the wasm kernels
//! follow the x86 ones bit for bit). Each port names the llama.cpp function it follows.
//!
//! Matrix-vector products follow llama.cpp: the activation row is first quantized to the
//! weight type's [`GgmlType::vec_dot_type`] (Q8_0, Q8_1 or Q8_K) with [`quantize_row`], then
//! [`vec_dot_fn`] gives the integer dot product kernel for one weight row.

// The kernels keep ggml's index loops so they can be read side by side with the C they port.
#![allow(clippy::needless_range_loop)]

use crate::{Error, Result};

mod float;
mod iq4_nl;
mod iq4_xs;
mod k_common;
#[cfg(target_arch = "aarch64")]
mod neon;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;
pub(crate) mod util;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use float::{BlockBF16, BlockF16, BlockF32};
pub use iq4_nl::BlockIQ4_NL;
pub use iq4_xs::BlockIQ4_XS;
pub use q2_k::BlockQ2_K;
pub use q3_k::BlockQ3_K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4_K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5_K;
pub use q6_k::BlockQ6_K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8_K;

/// Runs `$body` with `$B` bound to the block struct of `$ty`.
macro_rules! with_block {
    ($ty:expr, $B:ident => $body:expr) => {
        match $ty {
            GgmlType::F32 => {
                type $B = $crate::quant::BlockF32;
                $body
            }
            GgmlType::F16 => {
                type $B = $crate::quant::BlockF16;
                $body
            }
            GgmlType::BF16 => {
                type $B = $crate::quant::BlockBF16;
                $body
            }
            GgmlType::Q4_0 => {
                type $B = $crate::quant::BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $B = $crate::quant::BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $B = $crate::quant::BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $B = $crate::quant::BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $B = $crate::quant::BlockQ8_0;
                $body
            }
            GgmlType::Q8_1 => {
                type $B = $crate::quant::BlockQ8_1;
                $body
            }
            GgmlType::Q2_K => {
                type $B = $crate::quant::BlockQ2_K;
                $body
            }
            GgmlType::Q3_K => {
                type $B = $crate::quant::BlockQ3_K;
                $body
            }
            GgmlType::Q4_K => {
                type $B = $crate::quant::BlockQ4_K;
                $body
            }
            GgmlType::Q5_K => {
                type $B = $crate::quant::BlockQ5_K;
                $body
            }
            GgmlType::Q6_K => {
                type $B = $crate::quant::BlockQ6_K;
                $body
            }
            GgmlType::Q8_K => {
                type $B = $crate::quant::BlockQ8_K;
                $body
            }
            GgmlType::IQ4_NL => {
                type $B = $crate::quant::BlockIQ4_NL;
                $body
            }
            GgmlType::IQ4_XS => {
                type $B = $crate::quant::BlockIQ4_XS;
                $body
            }
        }
    };
}

/// Values per super-block of the k-quants (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A ggml tensor type, with ggml's numeric id (`enum ggml_type` in ggml.h), as stored in GGUF.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit float.
    F32 = 0,
    /// IEEE half.
    F16 = 1,
    /// 4-bit, scale only, blocks of 32.
    Q4_0 = 2,
    /// 4-bit, scale and min, blocks of 32.
    Q4_1 = 3,
    /// 5-bit, scale only, blocks of 32.
    Q5_0 = 6,
    /// 5-bit, scale and min, blocks of 32.
    Q5_1 = 7,
    /// 8-bit, scale only, blocks of 32 (also the activation type of Q4_0, Q5_0, Q8_0, IQ4_NL).
    Q8_0 = 8,
    /// 8-bit with the block sum, blocks of 32 (the activation type of Q4_1 and Q5_1).
    Q8_1 = 9,
    /// 2-bit k-quant, super-blocks of 256.
    Q2_K = 10,
    /// 3-bit k-quant, super-blocks of 256.
    Q3_K = 11,
    /// 4-bit k-quant, super-blocks of 256.
    Q4_K = 12,
    /// 5-bit k-quant, super-blocks of 256.
    Q5_K = 13,
    /// 6-bit k-quant, super-blocks of 256.
    Q6_K = 14,
    /// 8-bit with an f32 scale and group sums, super-blocks of 256 (activation type of the k-quants).
    Q8_K = 15,
    /// 4-bit non-linear, blocks of 32.
    IQ4_NL = 20,
    /// 4-bit non-linear with 6-bit sub-block scales, super-blocks of 256.
    IQ4_XS = 23,
    /// bfloat16.
    BF16 = 30,
}

impl GgmlType {
    /// Every type this engine implements.
    pub const ALL: [GgmlType; 17] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::BF16,
    ];

    /// The type with ggml id `id`, or `None` for ids this engine does not implement.
    pub fn from_u32(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// ggml's numeric id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name (`ggml_type_name`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q2_K => "q2_K",
            GgmlType::Q3_K => "q3_K",
            GgmlType::Q4_K => "q4_K",
            GgmlType::Q5_K => "q5_K",
            GgmlType::Q6_K => "q6_K",
            GgmlType::Q8_K => "q8_K",
            GgmlType::IQ4_NL => "iq4_nl",
            GgmlType::IQ4_XS => "iq4_xs",
            GgmlType::BF16 => "bf16",
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        with_block!(self, B => B::BLOCK_SIZE)
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        with_block!(self, B => size_of::<B>())
    }

    /// Whether the type is block-quantized (not F32, F16 or BF16).
    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// The type llama.cpp's CPU backend quantizes activations to before a dot product with a
    /// weight of this type (`type_traits_cpu[..].vec_dot_type`). Q8_1 and Q8_K have no dot
    /// product in llama.cpp; here they pair with themselves.
    pub fn vec_dot_type(self) -> GgmlType {
        with_block!(self, B => <B as QuantBlock>::VecDot::TYPE)
    }

    /// Bytes in a row of `n_cols` values. Errors if `n_cols` is not a whole number of blocks or
    /// the size overflows.
    pub fn row_size(self, n_cols: u64) -> Result<u64> {
        let bs = self.block_size() as u64;
        if !n_cols.is_multiple_of(bs) {
            return Err(Error::InvalidArgument(format!(
                "a {} row of {n_cols} values is not a whole number of {bs}-value blocks",
                self.name()
            )));
        }
        (n_cols / bs)
            .checked_mul(self.type_size() as u64)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a {} row of {n_cols} values overflows u64",
                    self.name()
                ))
            })
    }

    /// `row_size` as a `usize`, for in-memory buffers.
    fn row_bytes(self, n_values: usize) -> Result<usize> {
        let n = u64::try_from(n_values)
            .map_err(|_| Error::InvalidArgument("row length does not fit in u64".into()))?;
        usize::try_from(self.row_size(n)?).map_err(|_| {
            Error::InvalidArgument(format!(
                "a {} row of {n_values} values does not fit in memory",
                self.name()
            ))
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    /// Only this module's block structs implement [`super::QuantBlock`].
    pub trait Sealed: super::util::Pod {}
}

/// A block of a ggml type: the scalar reference operations on whole blocks.
///
/// The slice methods process as many whole blocks as both slices hold (they never panic);
/// the byte-level functions of this module check lengths and report mismatches as errors.
pub trait QuantBlock: sealed::Sealed + Copy + Send + Sync + std::fmt::Debug {
    /// The ggml type of this block.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK_SIZE: usize;
    /// The activation block type the dot product pairs this block with.
    type VecDot: QuantBlock;

    /// Dequantizes `blocks` into `dst` (`BLOCK_SIZE` values per block), bit-identical to ggml's
    /// `dequantize_row_*` and gguf-py's `quants.dequantize`.
    fn dequantize(blocks: &[Self], dst: &mut [f32]);

    /// Quantizes `src` into `dst` with ggml's reference quantizer (`quantize_row_*_ref`).
    fn quantize(src: &[f32], dst: &mut [Self]);

    /// Scalar dot product of weight blocks `w` with activation blocks `a` (ggml's
    /// `ggml_vec_dot_*_generic`).
    fn vec_dot(w: &[Self], a: &[Self::VecDot]) -> f32;

    /// Views bytes as blocks; errors unless `bytes` is a whole number of blocks.
    fn from_bytes(bytes: &[u8]) -> Result<&[Self]> {
        util::cast_blocks(bytes).ok_or_else(|| not_whole_blocks::<Self>(bytes.len()))
    }

    /// Mutable form of [`QuantBlock::from_bytes`].
    fn from_bytes_mut(bytes: &mut [u8]) -> Result<&mut [Self]> {
        let len = bytes.len();
        util::cast_blocks_mut(bytes).ok_or_else(|| not_whole_blocks::<Self>(len))
    }

    /// The raw bytes of `blocks`.
    fn as_bytes(blocks: &[Self]) -> &[u8] {
        util::blocks_as_bytes(blocks)
    }
}

fn not_whole_blocks<B: QuantBlock>(len: usize) -> Error {
    Error::InvalidArgument(format!(
        "{len} bytes is not a whole number of {}-byte {} blocks",
        size_of::<B>(),
        B::TYPE.name()
    ))
}

/// A kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Portable scalar reference code.
    Scalar,
    /// x86_64 AVX2 + FMA (+F16C), detected at run time.
    Avx2,
    /// wasm32 SIMD128, chosen at compile time (`-C target-feature=+simd128`).
    Simd128,
    /// aarch64 NEON (baseline on aarch64, so always available there).
    Neon,
}

impl Backend {
    /// The backends this CPU (or this wasm build) can run, scalar first.
    pub fn available() -> Vec<Backend> {
        let mut v = vec![Backend::Scalar];
        if Backend::Avx2.is_available() {
            v.push(Backend::Avx2);
        }
        if Backend::Simd128.is_available() {
            v.push(Backend::Simd128);
        }
        if Backend::Neon.is_available() {
            v.push(Backend::Neon);
        }
        v
    }

    /// Whether this backend can run here.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Scalar => true,
            Backend::Avx2 => avx2_available(),
            Backend::Simd128 => cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            Backend::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// The fastest backend available here, unless `CHORD_BACKEND` (`scalar`, `avx2`,
    /// `simd128`, `neon`) names another available one: for comparing backends on a whole model.
    pub fn best() -> Backend {
        static CHOSEN: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let fastest = Backend::fastest();
            match std::env::var("CHORD_BACKEND").as_deref() {
                Ok("scalar") => Backend::Scalar,
                Ok("avx2") if Backend::Avx2.is_available() => Backend::Avx2,
                Ok("simd128") if Backend::Simd128.is_available() => Backend::Simd128,
                Ok("neon") if Backend::Neon.is_available() => Backend::Neon,
                _ => fastest,
            }
        })
    }

    fn fastest() -> Backend {
        if Backend::Avx2.is_available() {
            Backend::Avx2
        } else if Backend::Simd128.is_available() {
            Backend::Simd128
        } else if Backend::Neon.is_available() {
            Backend::Neon
        } else {
            Backend::Scalar
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_available() -> bool {
    false
}

/// A dot product kernel on raw rows: `n` values of weights `w` (bytes of the weight type) and
/// activations `a` (bytes of its [`GgmlType::vec_dot_type`]).
///
/// Precondition: `n` is a whole number of blocks and both slices hold exactly `n` values.
/// If not, the kernel returns NaN (it never panics); use [`vec_dot`] for a checked call.
pub type VecDotFn = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// Splits raw rows into blocks, or `None` if the lengths do not match `n`.
#[inline(always)]
fn split_rows<'a, B: QuantBlock>(
    n: usize,
    w: &'a [u8],
    a: &'a [u8],
) -> Option<(&'a [B], &'a [B::VecDot])> {
    if !n.is_multiple_of(B::BLOCK_SIZE) {
        return None;
    }
    let nb = n / B::BLOCK_SIZE;
    let w: &[B] = util::cast_blocks(w)?;
    let a: &[B::VecDot] = util::cast_blocks(a)?;
    // Same number of values on both sides (block sizes may differ, e.g. 32 vs 256).
    if w.len() != nb || a.len().checked_mul(<B::VecDot as QuantBlock>::BLOCK_SIZE) != Some(n) {
        return None;
    }
    Some((w, a))
}

fn scalar_entry<B: QuantBlock>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    match split_rows::<B>(n, w, a) {
        Some((w, a)) => B::vec_dot(w, a),
        None => f32::NAN,
    }
}

/// Defines a `VecDotFn` that calls `$path::vec_dot` for block `$B` after checking lengths.
macro_rules! simd_entry {
    (avx2, $name:ident, $B:ty, $path:path) => {
        #[cfg(target_arch = "x86_64")]
        fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            use $path as k;
            match split_rows::<$B>(n, w, a) {
                // SAFETY: this entry is only handed out by `vec_dot_fn_for(.., Backend::Avx2)`,
                // which checks `avx2_available()` first.
                Some((w, a)) => unsafe { k::vec_dot(w, a) },
                None => f32::NAN,
            }
        }
    };
    (simd128, $name:ident, $B:ty, $path:path) => {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            use $path as k;
            match split_rows::<$B>(n, w, a) {
                Some((w, a)) => k::vec_dot(w, a),
                None => f32::NAN,
            }
        }
    };
    (neon, $name:ident, $B:ty, $path:path) => {
        #[cfg(target_arch = "aarch64")]
        fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            use $path as k;
            match split_rows::<$B>(n, w, a) {
                // SAFETY: NEON is part of the aarch64 baseline; the kernels only name it so
                // that its intrinsics can be called.
                Some((w, a)) => unsafe { k::vec_dot(w, a) },
                None => f32::NAN,
            }
        }
    };
}

simd_entry!(avx2, f32_avx2, BlockF32, float::avx2::f32);
simd_entry!(avx2, f16_avx2, BlockF16, float::avx2::f16);
simd_entry!(avx2, bf16_avx2, BlockBF16, float::avx2::bf16);
simd_entry!(avx2, q4_0_avx2, BlockQ4_0, q4_0::avx2);
simd_entry!(avx2, q4_1_avx2, BlockQ4_1, q4_1::avx2);
simd_entry!(avx2, q5_0_avx2, BlockQ5_0, q5_0::avx2);
simd_entry!(avx2, q5_1_avx2, BlockQ5_1, q5_1::avx2);
simd_entry!(avx2, q8_0_avx2, BlockQ8_0, q8_0::avx2);
simd_entry!(avx2, q2_k_avx2, BlockQ2_K, q2_k::avx2);
simd_entry!(avx2, q3_k_avx2, BlockQ3_K, q3_k::avx2);
simd_entry!(avx2, q4_k_avx2, BlockQ4_K, q4_k::avx2);
simd_entry!(avx2, q5_k_avx2, BlockQ5_K, q5_k::avx2);
simd_entry!(avx2, q6_k_avx2, BlockQ6_K, q6_k::avx2);
simd_entry!(avx2, iq4_nl_avx2, BlockIQ4_NL, iq4_nl::avx2);
simd_entry!(avx2, iq4_xs_avx2, BlockIQ4_XS, iq4_xs::avx2);

simd_entry!(simd128, f32_simd128, BlockF32, float::simd128::f32);
simd_entry!(simd128, f16_simd128, BlockF16, float::simd128::f16);
simd_entry!(simd128, bf16_simd128, BlockBF16, float::simd128::bf16);
simd_entry!(simd128, q4_0_simd128, BlockQ4_0, q4_0::simd128);
simd_entry!(simd128, q4_1_simd128, BlockQ4_1, q4_1::simd128);
simd_entry!(simd128, q5_0_simd128, BlockQ5_0, q5_0::simd128);
simd_entry!(simd128, q5_1_simd128, BlockQ5_1, q5_1::simd128);
simd_entry!(simd128, q8_0_simd128, BlockQ8_0, q8_0::simd128);
simd_entry!(simd128, q2_k_simd128, BlockQ2_K, q2_k::simd128);
simd_entry!(simd128, q3_k_simd128, BlockQ3_K, q3_k::simd128);
simd_entry!(simd128, q4_k_simd128, BlockQ4_K, q4_k::simd128);
simd_entry!(simd128, q5_k_simd128, BlockQ5_K, q5_k::simd128);
simd_entry!(simd128, q6_k_simd128, BlockQ6_K, q6_k::simd128);
simd_entry!(simd128, iq4_nl_simd128, BlockIQ4_NL, iq4_nl::simd128);
simd_entry!(simd128, iq4_xs_simd128, BlockIQ4_XS, iq4_xs::simd128);

simd_entry!(neon, f32_neon, BlockF32, float::neon::f32);
simd_entry!(neon, f16_neon, BlockF16, float::neon::f16);
simd_entry!(neon, q4_0_neon, BlockQ4_0, q4_0::neon);
simd_entry!(neon, q4_1_neon, BlockQ4_1, q4_1::neon);
simd_entry!(neon, q5_0_neon, BlockQ5_0, q5_0::neon);
simd_entry!(neon, q5_1_neon, BlockQ5_1, q5_1::neon);
simd_entry!(neon, q8_0_neon, BlockQ8_0, q8_0::neon);
simd_entry!(neon, q2_k_neon, BlockQ2_K, q2_k::neon);
simd_entry!(neon, q3_k_neon, BlockQ3_K, q3_k::neon);
simd_entry!(neon, q4_k_neon, BlockQ4_K, q4_k::neon);
simd_entry!(neon, q5_k_neon, BlockQ5_K, q5_k::neon);
simd_entry!(neon, q6_k_neon, BlockQ6_K, q6_k::neon);
simd_entry!(neon, iq4_nl_neon, BlockIQ4_NL, iq4_nl::neon);
simd_entry!(neon, iq4_xs_neon, BlockIQ4_XS, iq4_xs::neon);

/// Dot products of four weight rows with one activation row: `[w0·a, w1·a, w2·a, w3·a]`, each
/// bit for bit the [`VecDotFn`] of the same type (the rows are only interleaved, for speed).
pub type VecDot4Fn = fn(n: usize, w: [&[u8]; 4], a: &[u8]) -> [f32; 4];

/// Defines a `VecDot4Fn` that calls `$path::vec_dot_x4` for block `$B` after checking lengths.
macro_rules! simd_entry4 {
    (avx2, $name:ident, $B:ty, $path:path) => {
        #[cfg(target_arch = "x86_64")]
        fn $name(n: usize, w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            use $path as k;
            let rows = w.map(|w| split_rows::<$B>(n, w, a));
            match rows {
                [Some((w0, a)), Some((w1, _)), Some((w2, _)), Some((w3, _))] => {
                    // SAFETY: handed out by `vec_dot4_fn` only when AVX2 is the backend in use.
                    unsafe { k::vec_dot_x4([w0, w1, w2, w3], a) }
                }
                _ => [f32::NAN; 4],
            }
        }
    };
    (simd128, $name:ident, $B:ty, $path:path) => {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        fn $name(n: usize, w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            use $path as k;
            let rows = w.map(|w| split_rows::<$B>(n, w, a));
            match rows {
                [Some((w0, a)), Some((w1, _)), Some((w2, _)), Some((w3, _))] => {
                    k::vec_dot_x4([w0, w1, w2, w3], a)
                }
                _ => [f32::NAN; 4],
            }
        }
    };
}

simd_entry4!(avx2, q4_0_avx2_x4, BlockQ4_0, q4_0::avx2);
simd_entry4!(avx2, q4_1_avx2_x4, BlockQ4_1, q4_1::avx2);
simd_entry4!(avx2, q8_0_avx2_x4, BlockQ8_0, q8_0::avx2);
simd_entry4!(avx2, q5_0_avx2_x4, BlockQ5_0, q5_0::avx2);

simd_entry4!(simd128, q4_0_simd128_x4, BlockQ4_0, q4_0::simd128);
simd_entry4!(simd128, q4_1_simd128_x4, BlockQ4_1, q4_1::simd128);
simd_entry4!(simd128, q5_0_simd128_x4, BlockQ5_0, q5_0::simd128);
simd_entry4!(simd128, q8_0_simd128_x4, BlockQ8_0, q8_0::simd128);

/// Dot products of four weight rows with two activation rows: `[t][j] = w[j]·a[t]`, each bit
/// for bit the [`VecDotFn`] of the same type (prefill: every weight block is decoded once for
/// both tokens).
pub type VecDot4x2Fn = fn(n: usize, w: [&[u8]; 4], a: [&[u8]; 2]) -> [[f32; 4]; 2];

/// Defines a `VecDot4x2Fn` that calls `$path::vec_dot_x4t2` for block `$B` after checking lengths.
macro_rules! simd_entry4x2 {
    ($name:ident, $B:ty, $path:path) => {
        #[cfg(target_arch = "x86_64")]
        fn $name(n: usize, w: [&[u8]; 4], a: [&[u8]; 2]) -> [[f32; 4]; 2] {
            use $path as k;
            let first = w.map(|w| split_rows::<$B>(n, w, a[0]));
            let second = split_rows::<$B>(n, w[0], a[1]);
            match (first, second) {
                ([Some((w0, a0)), Some((w1, _)), Some((w2, _)), Some((w3, _))], Some((_, a1))) => {
                    // SAFETY: handed out by `vec_dot4x2_fn` only when AVX2 is the backend in use.
                    unsafe { k::vec_dot_x4t2([w0, w1, w2, w3], [a0, a1]) }
                }
                _ => [[f32::NAN; 4]; 2],
            }
        }
    };
}

simd_entry4x2!(q4_0_avx2_x4t2, BlockQ4_0, q4_0::avx2);
simd_entry4x2!(q4_1_avx2_x4t2, BlockQ4_1, q4_1::avx2);
simd_entry4x2!(q5_0_avx2_x4t2, BlockQ5_0, q5_0::avx2);
simd_entry4x2!(q8_0_avx2_x4t2, BlockQ8_0, q8_0::avx2);

/// Dot products of four weight rows with four activation rows: `[t][j] = w[j]·a[t]`, each bit
/// for bit the [`VecDotFn`] of the same type (prefill, AVX-512 VNNI only).
pub type VecDot4x4Fn = fn(n: usize, w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4];

/// Defines the AVX-512 VNNI entries of a Q8_0-family type or Q4_1 (`$path::vec_dot_x4_vnni::<T>`):
/// four rows with one, two and four activation rows, after checking lengths.
#[cfg(target_arch = "x86_64")]
macro_rules! vnni_entries {
    ($x1:ident, $x2:ident, $x4:ident, $B:ty, $path:path) => {
        #[cfg(target_arch = "x86_64")]
        fn vnni_rows<const T: usize>(n: usize, w: [&[u8]; 4], a: [&[u8]; T]) -> [[f32; 4]; T] {
            use $path as k;
            let ws = w.map(|w| split_rows::<$B>(n, w, a[0]).map(|(w, _)| w));
            let acts = a.map(|a| split_rows::<$B>(n, w[0], a).map(|(_, a)| a));
            match (ws, acts.iter().all(Option::is_some)) {
                ([Some(w0), Some(w1), Some(w2), Some(w3)], true) => {
                    let acts = acts.map(|a| a.unwrap_or_default());
                    // SAFETY: handed out by `vec_dot4*_fn` only where `vnni_available()`.
                    unsafe { k::vec_dot_x4_vnni::<T>([w0, w1, w2, w3], acts) }
                }
                _ => [[f32::NAN; 4]; T],
            }
        }
        #[cfg(target_arch = "x86_64")]
        pub(super) fn $x1(n: usize, w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            vnni_rows::<1>(n, w, [a])[0]
        }
        #[cfg(target_arch = "x86_64")]
        pub(super) fn $x2(n: usize, w: [&[u8]; 4], a: [&[u8]; 2]) -> [[f32; 4]; 2] {
            vnni_rows::<2>(n, w, a)
        }
        #[cfg(target_arch = "x86_64")]
        pub(super) fn $x4(n: usize, w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4] {
            vnni_rows::<4>(n, w, a)
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod vnni_q4_0 {
    use super::*;
    vnni_entries!(x1, x2, x4, BlockQ4_0, q4_0::avx2);
}
#[cfg(target_arch = "x86_64")]
mod vnni_q4_1 {
    use super::*;
    vnni_entries!(x1, x2, x4, BlockQ4_1, q4_1::avx2);
}
#[cfg(target_arch = "x86_64")]
mod vnni_q5_0 {
    use super::*;
    vnni_entries!(x1, x2, x4, BlockQ5_0, q5_0::avx2);
}
#[cfg(target_arch = "x86_64")]
mod vnni_q8_0 {
    use super::*;
    vnni_entries!(x1, x2, x4, BlockQ8_0, q8_0::avx2);
}

/// Dot products of four weight rows with eight Q8_0 activation rows `a`, given each one's block
/// scales as f32 (`d[t]`: [`q8_0_scales`] of `a[t]`, converted once per product rather than once
/// per weight row): `[t][j] = w[j]·a[t]`, each bit for bit the [`VecDotFn`] of the same type
/// (prefill, AVX-512 VNNI only).
pub type VecDot4x8Fn = fn(n: usize, w: [&[u8]; 4], a: [&[u8]; 8], d: [&[f32]; 8]) -> [[f32; 4]; 8];

/// The block scales of a Q8_0 row as f32 (exact), as [`VecDot4x8Fn`] takes them.
pub fn q8_0_scales(a: &[u8]) -> impl Iterator<Item = f32> + '_ {
    a.chunks_exact(std::mem::size_of::<BlockQ8_0>())
        .map(|b| util::f16_le([b[0], b[1]]))
}

/// Defines the eight-token AVX-512 VNNI entry of a Q8_0-family type
/// (`$path::vec_dot_x4t8_vnni`), after checking lengths.
macro_rules! vnni_entry_x8 {
    ($x8:ident, $B:ty, $path:path) => {
        #[cfg(target_arch = "x86_64")]
        fn $x8(n: usize, w: [&[u8]; 4], a: [&[u8]; 8], d: [&[f32]; 8]) -> [[f32; 4]; 8] {
            use $path as k;
            let ws = w.map(|w| split_rows::<$B>(n, w, a[0]).map(|(w, _)| w));
            let acts = a.map(|a| split_rows::<$B>(n, w[0], a).map(|(_, a)| a));
            let nb = n / <$B as QuantBlock>::BLOCK_SIZE;
            match (
                ws,
                acts.iter().all(Option::is_some) && d.iter().all(|d| d.len() == nb),
            ) {
                ([Some(w0), Some(w1), Some(w2), Some(w3)], true) => {
                    let acts = acts.map(|a| a.unwrap_or_default());
                    // SAFETY: handed out by `vec_dot4x8_fn` only where `vnni_available()`.
                    unsafe { k::vec_dot_x4t8_vnni([w0, w1, w2, w3], acts, d) }
                }
                _ => [[f32::NAN; 4]; 8],
            }
        }
    };
}

vnni_entry_x8!(q4_0_vnni_x8, BlockQ4_0, q4_0::avx2);
vnni_entry_x8!(q5_0_vnni_x8, BlockQ5_0, q5_0::avx2);
vnni_entry_x8!(q8_0_vnni_x8, BlockQ8_0, q8_0::avx2);

/// The four-row, eight-token kernel for `ty` on the backend in use, where there is one.
pub fn vec_dot4x8_fn(ty: GgmlType) -> Option<VecDot4x8Fn> {
    #[cfg(target_arch = "x86_64")]
    if vnni_available() {
        return match ty {
            GgmlType::Q4_0 => Some(q4_0_vnni_x8),
            GgmlType::Q5_0 => Some(q5_0_vnni_x8),
            GgmlType::Q8_0 => Some(q8_0_vnni_x8),
            _ => None,
        };
    }
    let _ = ty;
    None
}

/// Whether the AVX-512 VNNI kernels (the four-row ones here, the K-quant path's) can run here.
#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni_available() -> bool {
    x86::vnni_available()
}

/// The AVX-512 VNNI kernels of `ty` (one, two and four tokens), where they run here.
#[allow(clippy::type_complexity)]
fn vnni_fns(ty: GgmlType) -> Option<(VecDot4Fn, VecDot4x2Fn, VecDot4x4Fn)> {
    #[cfg(target_arch = "x86_64")]
    if vnni_available() {
        return match ty {
            GgmlType::Q4_0 => Some((vnni_q4_0::x1, vnni_q4_0::x2, vnni_q4_0::x4)),
            GgmlType::Q4_1 => Some((vnni_q4_1::x1, vnni_q4_1::x2, vnni_q4_1::x4)),
            GgmlType::Q5_0 => Some((vnni_q5_0::x1, vnni_q5_0::x2, vnni_q5_0::x4)),
            GgmlType::Q8_0 => Some((vnni_q8_0::x1, vnni_q8_0::x2, vnni_q8_0::x4)),
            _ => None,
        };
    }
    let _ = ty;
    None
}

/// The four-row, four-token kernel for `ty` on the backend in use, where there is one.
pub fn vec_dot4x4_fn(ty: GgmlType) -> Option<VecDot4x4Fn> {
    vnni_fns(ty).map(|f| f.2)
}

/// The four-row, two-token kernel for `ty` on the backend in use, where there is one.
pub fn vec_dot4x2_fn(ty: GgmlType) -> Option<VecDot4x2Fn> {
    if let Some(f) = vnni_fns(ty) {
        return Some(f.1);
    }
    match (Backend::best(), ty) {
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q4_0) => Some(q4_0_avx2_x4t2),
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q4_1) => Some(q4_1_avx2_x4t2),
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q5_0) => Some(q5_0_avx2_x4t2),
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q8_0) => Some(q8_0_avx2_x4t2),
        _ => None,
    }
}

/// The four-row kernel for `ty` on the backend in use, where there is one.
pub fn vec_dot4_fn(ty: GgmlType) -> Option<VecDot4Fn> {
    if let Some(f) = vnni_fns(ty) {
        return Some(f.0);
    }
    match (Backend::best(), ty) {
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q4_0) => Some(q4_0_avx2_x4),
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q4_1) => Some(q4_1_avx2_x4),
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q8_0) => Some(q8_0_avx2_x4),
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, GgmlType::Q5_0) => Some(q5_0_avx2_x4),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Backend::Simd128, GgmlType::Q4_0) => Some(q4_0_simd128_x4),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Backend::Simd128, GgmlType::Q4_1) => Some(q4_1_simd128_x4),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Backend::Simd128, GgmlType::Q5_0) => Some(q5_0_simd128_x4),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Backend::Simd128, GgmlType::Q8_0) => Some(q8_0_simd128_x4),
        _ => None,
    }
}

/// The dot product kernel of `backend` for weights of type `ty`, or `None` if that backend
/// cannot run here or has no kernel for `ty` (Q8_1 and Q8_K, whose dot products llama.cpp
/// never uses, are scalar only).
pub fn vec_dot_fn_for(ty: GgmlType, backend: Backend) -> Option<VecDotFn> {
    if !backend.is_available() {
        return None;
    }
    match backend {
        Backend::Scalar => Some(with_block!(ty, B => scalar_entry::<B> as VecDotFn)),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => match ty {
            GgmlType::F32 => Some(f32_avx2),
            GgmlType::F16 => Some(f16_avx2),
            GgmlType::BF16 => Some(bf16_avx2),
            GgmlType::Q4_0 => Some(q4_0_avx2),
            GgmlType::Q4_1 => Some(q4_1_avx2),
            GgmlType::Q5_0 => Some(q5_0_avx2),
            GgmlType::Q5_1 => Some(q5_1_avx2),
            GgmlType::Q8_0 => Some(q8_0_avx2),
            GgmlType::Q2_K => Some(q2_k_avx2),
            GgmlType::Q3_K => Some(q3_k_avx2),
            GgmlType::Q4_K => Some(q4_k_avx2),
            GgmlType::Q5_K => Some(q5_k_avx2),
            GgmlType::Q6_K => Some(q6_k_avx2),
            GgmlType::IQ4_NL => Some(iq4_nl_avx2),
            GgmlType::IQ4_XS => Some(iq4_xs_avx2),
            GgmlType::Q8_1 | GgmlType::Q8_K => None,
        },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Backend::Simd128 => match ty {
            GgmlType::F32 => Some(f32_simd128),
            GgmlType::F16 => Some(f16_simd128),
            GgmlType::BF16 => Some(bf16_simd128),
            GgmlType::Q4_0 => Some(q4_0_simd128),
            GgmlType::Q4_1 => Some(q4_1_simd128),
            GgmlType::Q5_0 => Some(q5_0_simd128),
            GgmlType::Q5_1 => Some(q5_1_simd128),
            GgmlType::Q8_0 => Some(q8_0_simd128),
            GgmlType::Q2_K => Some(q2_k_simd128),
            GgmlType::Q3_K => Some(q3_k_simd128),
            GgmlType::Q4_K => Some(q4_k_simd128),
            GgmlType::Q5_K => Some(q5_k_simd128),
            GgmlType::Q6_K => Some(q6_k_simd128),
            GgmlType::IQ4_NL => Some(iq4_nl_simd128),
            GgmlType::IQ4_XS => Some(iq4_xs_simd128),
            GgmlType::Q8_1 | GgmlType::Q8_K => None,
        },
        #[cfg(target_arch = "aarch64")]
        Backend::Neon => match ty {
            GgmlType::F32 => Some(f32_neon),
            GgmlType::F16 => Some(f16_neon),
            // ggml has no NEON BF16 dot product without the BF16 extension: scalar, as there.
            GgmlType::BF16 => Some(scalar_entry::<BlockBF16>),
            GgmlType::Q4_0 => Some(q4_0_neon),
            GgmlType::Q4_1 => Some(q4_1_neon),
            GgmlType::Q5_0 => Some(q5_0_neon),
            GgmlType::Q5_1 => Some(q5_1_neon),
            GgmlType::Q8_0 => Some(q8_0_neon),
            GgmlType::Q2_K => Some(q2_k_neon),
            GgmlType::Q3_K => Some(q3_k_neon),
            GgmlType::Q4_K => Some(q4_k_neon),
            GgmlType::Q5_K => Some(q5_k_neon),
            GgmlType::Q6_K => Some(q6_k_neon),
            GgmlType::IQ4_NL => Some(iq4_nl_neon),
            GgmlType::IQ4_XS => Some(iq4_xs_neon),
            GgmlType::Q8_1 | GgmlType::Q8_K => None,
        },
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The fastest dot product kernel for weights of type `ty` on this CPU. Resolve it once per
/// matrix, outside the row loop.
pub fn vec_dot_fn(ty: GgmlType) -> VecDotFn {
    vec_dot_fn_for(ty, Backend::best())
        .unwrap_or_else(|| with_block!(ty, B => scalar_entry::<B> as VecDotFn))
}

/// Checked dot product of `n` values: `w` in type `ty`, `a` in `ty.vec_dot_type()`.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Result<f32> {
    let at = ty.vec_dot_type();
    let (wn, an) = (ty.row_bytes(n)?, at.row_bytes(n)?);
    if w.len() != wn || a.len() != an {
        return Err(Error::InvalidArgument(format!(
            "vec_dot of {n} {ty} values needs {wn} weight bytes and {an} {at} bytes, got {} and {}",
            w.len(),
            a.len()
        )));
    }
    Ok(vec_dot_fn(ty)(n, w, a))
}

fn check_row(ty: GgmlType, n_values: usize, n_bytes: usize) -> Result<()> {
    let want = ty.row_bytes(n_values)?;
    if n_bytes != want {
        return Err(Error::InvalidArgument(format!(
            "a {ty} row of {n_values} values is {want} bytes, got {n_bytes}"
        )));
    }
    Ok(())
}

/// Dequantizes one row of type `ty` (`src` bytes) into `dst` (`dst.len()` values),
/// bit-identical to ggml's `dequantize_row_*`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_row(ty, dst.len(), src.len())?;
    with_block!(ty, B => B::dequantize(B::from_bytes(src)?, dst));
    Ok(())
}

/// Quantizes one row to type `ty`, as llama.cpp's CPU backend does (`type_traits_cpu[ty].from_float`).
///
/// For the weight types this is ggml's reference quantizer (`quantize_row_*_ref`). For the
/// activation types Q8_0 and Q8_1 it is the x86 AVX2 `quantize_row_q8_0/q8_1` of
/// `ggml-cpu/arch/x86/quants.c` (scale `127/amax`, rounding half to even), which differs from
/// the `_ref` version in the last bit of some values; Q8_K uses `quantize_row_q8_K_ref`, as x86
/// llama.cpp does. F16 and BF16 round to nearest even. SIMD is used where available; every
/// backend gives the same bytes.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    quantize_row_with(Backend::best(), ty, src, dst)
}

/// [`quantize_row`] on a chosen backend (for tests and benches). Errors if `backend` cannot run here.
pub fn quantize_row_with(
    backend: Backend,
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<()> {
    check_row(ty, src.len(), dst.len())?;
    if !backend.is_available() {
        return Err(Error::Unsupported(format!(
            "{backend:?} kernels on this CPU"
        )));
    }
    match ty {
        GgmlType::Q8_0 => q8_0::quantize_act(backend, src, BlockQ8_0::from_bytes_mut(dst)?),
        GgmlType::Q8_1 => q8_1::quantize_act(backend, src, BlockQ8_1::from_bytes_mut(dst)?),
        GgmlType::Q8_K => q8_k::quantize_act(backend, src, BlockQ8_K::from_bytes_mut(dst)?),
        _ => with_block!(ty, B => B::quantize(src, B::from_bytes_mut(dst)?)),
    }
    Ok(())
}

/// Quantizes one row with ggml's reference quantizer `quantize_row_*_ref` for every type
/// (for Q8_0/Q8_1: scale `1/d` and rounding half away from zero). This is what gguf-py's
/// `quants.quantize` reproduces.
pub fn quantize_row_ref(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_row(ty, src.len(), dst.len())?;
    with_block!(ty, B => B::quantize(src, B::from_bytes_mut(dst)?));
    Ok(())
}

#[cfg(test)]
mod tests;

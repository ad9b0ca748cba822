//! `sinf` and `cosf` as glibc computes them on x86_64 CPUs with FMA, the way llama.cpp's RoPE
//! cache gets them (`ggml_rope_cache_init` calls `sinf`/`cosf`), on every target.
//!
//! `f32::sin`/`f32::cos` call the C library: glibc natively, wasi-libc (musl's algorithm) in the
//! component, and the two differ in the last bit for about 1% of RoPE angles; through the f16 KV
//! cache and requantized activations such a bit can move logits visibly. This is a port of the
//! algorithm glibc uses (Arm's optimized-routines `sinf`/`cosf`, sysdeps/ieee754/flt-32, 2018:
//! double-precision polynomials after a one-step or a 4/π-table range reduction) with the fused
//! multiply-adds of glibc's FMA build (`s_sinf-fma.c`, selected at run time on such CPUs), which
//! GCC forms wherever a product's only use is an addition. Checked bit for bit against glibc in
//! the tests.

/// The polynomial set of optimized-routines' `sincos_t`: the second computes -cos.
struct Poly {
    c0: f64,
    c1: f64,
    c2: f64,
    c3: f64,
    c4: f64,
    s1: f64,
    s2: f64,
    s3: f64,
}

const C: [f64; 5] = [
    1.0,
    f64::from_bits(0xBFDF_FFFF_FD0C_621C), // -0x1.ffffffd0c621cp-2
    f64::from_bits(0x3FA5_5553_E106_8F19), // 0x1.55553e1068f19p-5
    f64::from_bits(0xBF56_C087_E89A_359D), // -0x1.6c087e89a359dp-10
    f64::from_bits(0x3EF9_9343_027B_F8C3), // 0x1.99343027bf8c3p-16
];
const S: [f64; 3] = [
    f64::from_bits(0xBFC5_5554_5995_A603), // -0x1.555545995a603p-3
    f64::from_bits(0x3F81_1076_0523_0BC4), // 0x1.1107605230bc4p-7
    f64::from_bits(0xBF29_94EB_3774_CF24), // -0x1.994eb3774cf24p-13
];

const POLY: [Poly; 2] = [
    Poly {
        c0: C[0],
        c1: C[1],
        c2: C[2],
        c3: C[3],
        c4: C[4],
        s1: S[0],
        s2: S[1],
        s3: S[2],
    },
    Poly {
        c0: -C[0],
        c1: -C[1],
        c2: -C[2],
        c3: -C[3],
        c4: -C[4],
        s1: S[0],
        s2: S[1],
        s3: S[2],
    },
];

/// 2/π · 2^24 (0x1.45F306DC9C883p+23) and π/2.
const HPI_INV: f64 = f64::from_bits(0x4164_5F30_6DC9_C883);
const HPI: f64 = f64::from_bits(0x3FF9_21FB_5444_2D18);
/// π · 2^-62.
const PI63: f64 = f64::from_bits(0x3C19_21FB_5444_2D18);
/// 4/π to 192 bits, 8 new bits per entry (`__inv_pio4`).
const INV_PIO4: [u32; 24] = [
    0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529, 0x441529fc,
    0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0, 0x34ddc0db,
    0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
];

fn abstop12(x: f32) -> u32 {
    (x.to_bits() >> 20) & 0x7ff
}

/// `sinf_poly`: sin (`n` even) or cos (`n` odd) of the reduced `x` (`x2 = x·x`).
fn poly(x: f64, x2: f64, p: &Poly, n: u32) -> f32 {
    if n & 1 == 0 {
        let x3 = x * x2;
        let s1 = x2.mul_add(p.s3, p.s2);
        let x7 = x3 * x2;
        let s = x3.mul_add(p.s1, x);
        x7.mul_add(s1, s) as f32
    } else {
        let x4 = x2 * x2;
        let c2 = x2.mul_add(p.c4, p.c3);
        let c1 = x2.mul_add(p.c1, p.c0);
        let x6 = x4 * x2;
        let c = x4.mul_add(p.c2, c1);
        x6.mul_add(c2, c) as f32
    }
}

/// `reduce_fast` (|x| < 120): x modulo π/2 and the quadrant.
fn reduce_fast(x: f64) -> (f64, u32) {
    let r = x * HPI_INV;
    // C's (int) truncation; |r| < 2^31 here.
    let n = ((r as i32).wrapping_add(0x80_0000)) >> 24;
    ((-f64::from(n)).mul_add(HPI, x), n as u32)
}

/// `reduce_large`: x (the bits of a float, |x| >= 120) modulo π/2 in exact integer arithmetic.
fn reduce_large(xi: u32) -> (f64, u32) {
    let arr = &INV_PIO4[((xi >> 26) & 15) as usize..];
    let shift = (xi >> 23) & 7;
    let xi = ((xi & 0xff_ffff) | 0x80_0000) << shift;
    let res0 = u64::from(xi.wrapping_mul(arr[0]));
    let res1 = u64::from(xi) * u64::from(arr[4]);
    let res2 = u64::from(xi) * u64::from(arr[8]);
    let mut res0 = (res2 >> 32) | (res0 << 32);
    res0 = res0.wrapping_add(res1);
    let n = res0.wrapping_add(1 << 61) >> 62;
    res0 = res0.wrapping_sub(n << 62);
    ((res0 as i64) as f64 * PI63, n as u32)
}

const SIGN: [f64; 4] = [1.0, -1.0, -1.0, 1.0];

/// glibc's `sinf` (see the module documentation).
pub(crate) fn sinf(y: f32) -> f32 {
    let x = f64::from(y);
    if abstop12(y) < abstop12(std::f32::consts::FRAC_PI_4) {
        if abstop12(y) < abstop12(f32::from_bits(0x3980_0000)) {
            // |y| < 2^-12
            return y;
        }
        poly(x, x * x, &POLY[0], 0)
    } else if abstop12(y) < abstop12(120.0) {
        let (x, n) = reduce_fast(x);
        let s = SIGN[(n & 3) as usize];
        let p = &POLY[((n >> 1) & 1) as usize];
        poly(x * s, x * x, p, n)
    } else if abstop12(y) < abstop12(f32::INFINITY) {
        let xi = y.to_bits();
        let sign = xi >> 31;
        let (x, n) = reduce_large(xi);
        let q = n.wrapping_add(sign);
        let s = SIGN[(q & 3) as usize];
        let p = &POLY[((q >> 1) & 1) as usize];
        poly(x * s, x * x, p, n)
    } else {
        f32::NAN
    }
}

/// glibc's `cosf` (see the module documentation).
pub(crate) fn cosf(y: f32) -> f32 {
    let x = f64::from(y);
    if abstop12(y) < abstop12(std::f32::consts::FRAC_PI_4) {
        if abstop12(y) < abstop12(f32::from_bits(0x3980_0000)) {
            return 1.0;
        }
        poly(x, x * x, &POLY[0], 1)
    } else if abstop12(y) < abstop12(120.0) {
        let (x, n) = reduce_fast(x);
        let s = SIGN[(n & 3) as usize];
        let p = &POLY[((n >> 1) & 1) as usize];
        poly(x * s, x * x, p, n ^ 1)
    } else if abstop12(y) < abstop12(f32::INFINITY) {
        let xi = y.to_bits();
        let sign = xi >> 31;
        let (x, n) = reduce_large(xi);
        let q = n.wrapping_add(sign);
        let s = SIGN[(q & 3) as usize];
        let p = &POLY[((q >> 1) & 1) as usize];
        poly(x * s, x * x, p, n ^ 1)
    } else {
        f32::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Angles as RoPE makes them (`theta = p · base^(-2i/n_rot)`, advanced by f32 products),
    /// then every 61st float in [-2^20, 2^20].
    fn angles() -> impl Iterator<Item = f32> {
        let rope = [
            (1e6f32, 256usize),
            (1e4, 256),
            (1e4, 64),
            (1e5, 64),
            (5e5, 128),
        ]
        .into_iter()
        .flat_map(|(base, n_rot)| {
            let ts = base.powf(-2.0 / n_rot as f32);
            (0..2048).flat_map(move |p| {
                let mut theta = p as f32;
                (0..n_rot / 2).map(move |_| {
                    let t = theta;
                    theta *= ts;
                    t
                })
            })
        });
        let sweep = (0..u32::MAX / 61)
            .map(|i| f32::from_bits(i * 61))
            .filter(|x| x.abs() <= 1_048_576.0);
        rope.chain(sweep.clone().map(|x| -x)).chain(sweep)
    }

    /// Accuracy, on every target: within one ulp of the double-precision result.
    #[test]
    fn sinf_cosf_are_accurate() {
        for x in angles().step_by(7) {
            for (got, want) in [
                (sinf(x), (f64::from(x)).sin()),
                (cosf(x), (f64::from(x)).cos()),
            ] {
                let ulp = f64::from((want as f32).abs().next_up() - (want as f32).abs());
                assert!(
                    (f64::from(got) - want).abs() <= ulp,
                    "{x:e}: {got:e} vs {want:e}"
                );
            }
        }
        assert_eq!(sinf(0.0).to_bits(), 0);
        assert_eq!(sinf(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(cosf(0.0), 1.0);
        assert!(sinf(f32::INFINITY).is_nan() && cosf(f32::NAN).is_nan());
    }

    /// Bit for bit what glibc's FMA build returns (the C library `f32::sin` calls natively),
    /// where that is the library: x86_64 Linux (glibc >= 2.28) on a CPU with FMA.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn sinf_cosf_match_glibc() {
        if !std::arch::is_x86_feature_detected!("fma") {
            eprintln!("no FMA: glibc takes its other build; nothing to compare");
            return;
        }
        let mut n = 0u64;
        for x in angles() {
            n += 1;
            assert_eq!(sinf(x).to_bits(), x.sin().to_bits(), "sinf({x:e})");
            assert_eq!(cosf(x).to_bits(), x.cos().to_bits(), "cosf({x:e})");
        }
        assert!(n > 10_000_000);
    }
}

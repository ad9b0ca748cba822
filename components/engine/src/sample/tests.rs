use super::*;

fn opts(f: impl FnOnce(&mut SamplerOptions)) -> SamplerOptions {
    let mut o = SamplerOptions {
        seed: 1234,
        ..Default::default()
    };
    f(&mut o);
    o
}

/// Logits whose softmax (at temperature 1) is exactly `probs`.
fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

fn ids(s: &Sampler) -> Vec<u32> {
    s.candidates().iter().map(|t| t.id).collect()
}

#[test]
#[allow(clippy::excessive_precision)] // the digits exactly as printf printed them
fn mt19937_matches_libstdcxx() {
    // The C++ standard fixes the 10000th output of a default-seeded mt19937.
    let mut g = Mt19937::new(5489);
    for _ in 0..9999 {
        g.next_u32();
    }
    assert_eq!(g.next_u32(), 4_123_659_995);

    // Values printed by g++ 12 (libstdc++): std::mt19937 g(42);
    // std::uniform_real_distribution<double> d(0.0f, 1.0f); d(g) five times, "%.17g".
    let want = [
        0.796_542_984_287_845_98,
        0.183_434_787_893_368_48,
        0.779_690_997_612_661_25,
        0.596_850_161_580_056_55,
        0.445_832_757_548_433_43,
    ];
    let mut g = Mt19937::new(42);
    for w in want {
        assert_eq!(g.uniform_f64(), w);
    }
    let mut g = Mt19937::new(0xFFFF_FFFE);
    let a = g.next_u32();
    let b = g.next_u32();
    assert_eq!((a, b), (2_236_247_450, 437_438_088));
}

#[test]
fn defaults_are_llama_cpp_defaults() {
    let o = SamplerOptions::default();
    assert_eq!(o.temperature, 0.8);
    assert_eq!(o.top_k, 40);
    assert_eq!(o.top_p, 0.95);
    assert_eq!(o.min_p, 0.05);
    assert_eq!(o.typical_p, 1.0);
    assert_eq!(o.repeat_penalty, 1.0);
    assert_eq!(o.repeat_last_n, 64);
    assert_eq!(o.frequency_penalty, 0.0);
    assert_eq!(o.presence_penalty, 0.0);
    assert_eq!(o.seed, DEFAULT_SEED);
    o.validate().unwrap();
}

#[test]
fn invalid_options_are_rejected() {
    let cases: Vec<SamplerOptions> = vec![
        opts(|o| o.temperature = f32::NAN),
        opts(|o| o.temperature = f32::INFINITY),
        opts(|o| o.top_p = -0.1),
        opts(|o| o.top_p = 1.5),
        opts(|o| o.top_p = f32::NAN),
        opts(|o| o.min_p = f32::NAN),
        opts(|o| o.min_p = -1.0),
        opts(|o| o.typical_p = 2.0),
        opts(|o| o.repeat_penalty = 0.0),
        opts(|o| o.repeat_penalty = -1.0),
        opts(|o| o.repeat_penalty = f32::NAN),
        opts(|o| o.frequency_penalty = f32::NAN),
        opts(|o| o.presence_penalty = f32::INFINITY),
        opts(|o| o.logit_bias = vec![(1, f32::NAN)]),
        opts(|o| o.logit_bias = vec![(1, f32::INFINITY)]),
    ];
    for o in cases {
        let e = Sampler::new(o.clone(), 10).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{o:?} -> {e}");
    }
    // Bias token out of range, empty vocabulary.
    let e = Sampler::new(opts(|o| o.logit_bias = vec![(10, 1.0)]), 10).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(Sampler::new(SamplerOptions::default(), 0).is_err());
    // A -inf bias (a ban) is fine.
    Sampler::new(opts(|o| o.logit_bias = vec![(9, f32::NEG_INFINITY)]), 10).unwrap();
}

#[test]
fn bad_rows_and_tokens_are_errors() {
    let mut s = Sampler::new(opts(|_| {}), 4).unwrap();
    assert!(matches!(
        s.sample(&[0.0; 3]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.sample(&[0.0, f32::NAN, 0.0, 0.0]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.sample(&[0.0, f32::INFINITY, 0.0, 0.0]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(s.accept(4), Err(Error::InvalidArgument(_))));
    // All tokens banned.
    let mut s = Sampler::new(
        opts(|o| o.logit_bias = (0..4).map(|i| (i, f32::NEG_INFINITY)).collect()),
        4,
    )
    .unwrap();
    assert!(matches!(
        s.sample(&[1.0; 4]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn greedy_is_argmax_first_on_ties() {
    let mut s = Sampler::new(SamplerOptions::greedy(), 5).unwrap();
    assert_eq!(s.sample(&[0.1, 3.0, -2.0, 3.0, 2.9]).unwrap(), 1);
    assert_eq!(s.candidates().len(), 1);
    assert_eq!(s.candidates()[0].p, 1.0);
    assert_eq!(s.sample(&[-5.0, -1.0, -3.0, -1.5, -9.0]).unwrap(), 1);
    // The same errors as the sampler chain: a NaN or +inf anywhere, or nothing but -inf.
    let ninf = f32::NEG_INFINITY;
    assert_eq!(s.sample(&[ninf, ninf, -7.0, ninf, ninf]).unwrap(), 2);
    for bad in [
        [0.0, 1.0, f32::NAN, 0.0, 5.0],
        [9.0, 1.0, 0.0, 0.0, f32::INFINITY],
        [ninf; 5],
    ] {
        assert!(
            matches!(s.sample(&bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    assert_eq!(argmax(&[0.1, 3.0, -2.0, 3.0]), Some(1));
    assert_eq!(argmax(&[f32::NAN, -1.0]), Some(1));
    assert_eq!(argmax(&[]), None);
    // Negative temperature is greedy too, as in llama.cpp.
    let mut s = Sampler::new(opts(|o| o.temperature = -1.0), 3).unwrap();
    for _ in 0..10 {
        assert_eq!(s.sample(&[1.0, 1.1, 1.05]).unwrap(), 1);
    }
}

#[test]
fn logit_bias_applies_before_greedy() {
    let o = SamplerOptions {
        logit_bias: vec![(1, f32::NEG_INFINITY), (2, 0.5)],
        ..SamplerOptions::greedy()
    };
    let mut s = Sampler::new(o, 4).unwrap();
    // Token 1 is banned; token 2 gets +0.5 and overtakes token 0.
    assert_eq!(s.sample(&[2.0, 5.0, 1.6, 0.0]).unwrap(), 2);
}

#[test]
fn penalties_follow_llama_cpp() {
    let o = SamplerOptions {
        repeat_penalty: 2.0,
        frequency_penalty: 0.25,
        presence_penalty: 0.5,
        repeat_last_n: 3,
        ..SamplerOptions::greedy()
    };
    let mut s = Sampler::new(o, 4).unwrap();
    for t in [0, 1, 1] {
        s.accept(t).unwrap();
    }
    // Token 0: count 1, logit 4 → 4/2 - (0.25 + 0.5) = 1.25.
    // Token 1: count 2, logit -1 → -1*2 - (0.5 + 0.5) = -3.
    // Tokens 2 and 3: untouched.
    s.sample(&[4.0, -1.0, 1.2, 1.3]).unwrap();
    // The greedy path keeps only the winner; recompute the row through a wide sampler instead.
    let wide = SamplerOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..s.options().clone()
    };
    let mut w = Sampler::new(wide, 4).unwrap();
    for t in [0, 1, 1] {
        w.accept(t).unwrap();
    }
    w.sample(&[4.0, -1.0, 1.2, 1.3]).unwrap();
    let mut got: Vec<(u32, f32)> = w.candidates().iter().map(|t| (t.id, t.logit)).collect();
    got.sort_by_key(|x| x.0);
    assert_eq!(got, vec![(0, 1.25), (1, -3.0), (2, 1.2), (3, 1.3)]);
    // So greedy picks token 3.
    assert_eq!(s.candidates()[0].id, 3);

    // The window holds 3 tokens: after two more, token 0 drops out and is no longer penalized.
    s.accept(2).unwrap();
    s.accept(2).unwrap();
    // Window is now [1, 2, 2]; token 0 at 4.0 wins again.
    assert_eq!(s.sample(&[4.0, -1.0, 1.2, 1.3]).unwrap(), 0);

    // reset() forgets the window.
    s.reset();
    assert_eq!(s.sample(&[1.0, 1.5, 1.0, 1.0]).unwrap(), 1);
}

#[test]
fn repeat_penalty_one_and_last_n_zero_disable() {
    let mut s = Sampler::new(
        SamplerOptions {
            repeat_penalty: 5.0,
            repeat_last_n: 0,
            ..SamplerOptions::greedy()
        },
        2,
    )
    .unwrap();
    s.accept(0).unwrap();
    assert_eq!(s.sample(&[1.0, 0.5]).unwrap(), 0);
    let mut s = Sampler::new(
        SamplerOptions {
            repeat_penalty: 5.0,
            ..SamplerOptions::greedy()
        },
        2,
    )
    .unwrap();
    s.accept(0).unwrap();
    assert_eq!(s.sample(&[1.0, 0.5]).unwrap(), 1);
}

#[test]
fn top_k_keeps_k_sorted() {
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 3;
            o.top_p = 1.0;
            o.min_p = 0.0;
            o.temperature = 1.0;
        }),
        6,
    )
    .unwrap();
    s.sample(&[0.0, 5.0, 1.0, 4.0, 4.0, -1.0]).unwrap();
    assert_eq!(ids(&s), vec![1, 3, 4]);
    // top_k = 1 is greedy whatever the temperature.
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 1;
            o.temperature = 100.0;
        }),
        4,
    )
    .unwrap();
    for _ in 0..20 {
        assert_eq!(s.sample(&[0.0, 0.1, 0.3, 0.2]).unwrap(), 2);
    }
}

#[test]
fn top_p_keeps_the_nucleus() {
    let probs = [0.05, 0.5, 0.15, 0.3];
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 0.75;
            o.min_p = 0.0;
            o.temperature = 1.0;
        }),
        4,
    )
    .unwrap();
    s.sample(&logits_of(&probs)).unwrap();
    // 0.5 < 0.75 <= 0.5 + 0.3.
    assert_eq!(ids(&s), vec![1, 3]);
    let p: f32 = s.candidates().iter().map(|t| t.p).sum();
    assert!((p - 1.0).abs() < 1e-6);
    assert!((s.candidates()[0].p - 0.5 / 0.8).abs() < 1e-6);
    // min_keep overrides the cut.
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 0.1;
            o.min_p = 0.0;
            o.min_keep = 3;
        }),
        4,
    )
    .unwrap();
    s.sample(&logits_of(&probs)).unwrap();
    assert_eq!(ids(&s), vec![1, 3, 2]);
}

#[test]
fn top_p_large_vocab_matches_full_sort() {
    // Over 1024 candidates llama.cpp sorts only the top 256 first; the result must equal a full
    // sort, including when the nucleus runs past those 256.
    let n = 5000;
    let logits: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    for top_p in [0.01f32, 0.3, 0.9, 0.999] {
        let mut s = Sampler::new(
            opts(|o| {
                o.top_k = 0;
                o.top_p = top_p;
                o.min_p = 0.0;
                o.temperature = 1.0;
            }),
            n,
        )
        .unwrap();
        s.sample(&logits).unwrap();
        let got = ids(&s);
        // Reference: full sort, softmax, cumulative cut.
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = all[0].1;
        let sum: f32 = logits.iter().map(|l| libm::expf(l - max)).sum();
        let mut cum = 0.0f32;
        let mut want = Vec::new();
        for (id, l) in all {
            cum += libm::expf(l - max) / sum;
            want.push(id);
            if cum >= top_p {
                break;
            }
        }
        assert_eq!(got, want, "top_p {top_p}");
        assert!(got.len() > 1);
    }
}

#[test]
fn min_p_drops_unlikely_tokens() {
    let probs = [0.05, 0.5, 0.15, 0.3];
    // Unsorted path (no top-k before it): order is kept.
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 1.0;
            o.min_p = 0.2;
        }),
        4,
    )
    .unwrap();
    s.sample(&logits_of(&probs)).unwrap();
    // Threshold 0.2 * 0.5 = 0.1: token 0 (0.05) goes.
    assert_eq!(ids(&s), vec![1, 2, 3]);
    // Sorted path (after top-k).
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 4;
            o.top_p = 1.0;
            o.min_p = 0.2;
        }),
        4,
    )
    .unwrap();
    s.sample(&logits_of(&probs)).unwrap();
    assert_eq!(ids(&s), vec![1, 3, 2]);
    // min_keep forces the sorted path and keeps 4.
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 1.0;
            o.min_p = 0.9;
            o.min_keep = 4;
        }),
        4,
    )
    .unwrap();
    s.sample(&logits_of(&probs)).unwrap();
    assert_eq!(ids(&s), vec![1, 3, 2, 0]);
}

#[test]
fn typical_keeps_typical_tokens() {
    // Entropy of [0.5, 0.3, 0.15, 0.05] ≈ 1.1437; |−ln p − H| ranks: 0.3 (0.06), 0.5 (0.45),
    // 0.15 (0.75), 0.05 (1.85). Cumulative: 0.3, 0.8 > 0.7 → keeps {0.3, 0.5}.
    let probs = [0.05, 0.5, 0.15, 0.3];
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 1.0;
            o.min_p = 0.0;
            o.typical_p = 0.7;
        }),
        4,
    )
    .unwrap();
    s.sample(&logits_of(&probs)).unwrap();
    assert_eq!(ids(&s), vec![3, 1]);
}

#[test]
fn temperature_is_applied_after_filters() {
    // With top_k 2, tokens outside the top 2 never appear even at a huge temperature.
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 2;
            o.top_p = 1.0;
            o.min_p = 0.0;
            o.temperature = 1000.0;
        }),
        4,
    )
    .unwrap();
    let mut seen = [0u32; 4];
    for _ in 0..400 {
        seen[s.sample(&[0.0, 3.0, 2.0, 1.0]).unwrap() as usize] += 1;
    }
    assert_eq!(seen[0] + seen[3], 0);
    // Nearly uniform between the two at T = 1000.
    assert!(seen[1] > 150 && seen[2] > 150, "{seen:?}");
    // Temperature divides the logits of the survivors.
    let c: Vec<f32> = s.candidates().iter().map(|t| t.logit).collect();
    assert_eq!(c, vec![3.0 / 1000.0, 2.0 / 1000.0]);
}

#[test]
fn dist_follows_the_probabilities() {
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 1.0;
            o.min_p = 0.0;
            o.temperature = 1.0;
        }),
        3,
    )
    .unwrap();
    let logits = logits_of(&[0.6, 0.3, 0.1]);
    let n = 30_000;
    let mut seen = [0u32; 3];
    for _ in 0..n {
        seen[s.sample(&logits).unwrap() as usize] += 1;
    }
    for (c, p) in seen.iter().zip([0.6, 0.3, 0.1]) {
        let f = f64::from(*c) / f64::from(n);
        assert!((f - p).abs() < 0.015, "{seen:?}");
    }
}

#[test]
fn same_seed_same_tokens() {
    let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 20.0).collect();
    let run = |seed: u32| {
        let mut s = Sampler::new(
            SamplerOptions {
                seed,
                repeat_penalty: 1.1,
                ..Default::default()
            },
            logits.len(),
        )
        .unwrap();
        let mut out = Vec::new();
        for _ in 0..64 {
            let t = s.sample(&logits).unwrap();
            s.accept(t).unwrap();
            out.push(t);
        }
        out
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    // reset() replays the same stream.
    let mut s = Sampler::new(
        SamplerOptions {
            seed: 7,
            repeat_penalty: 1.1,
            ..Default::default()
        },
        logits.len(),
    )
    .unwrap();
    for _ in 0..10 {
        let t = s.sample(&logits).unwrap();
        s.accept(t).unwrap();
    }
    s.reset();
    let mut b = Vec::new();
    for _ in 0..64 {
        let t = s.sample(&logits).unwrap();
        s.accept(t).unwrap();
        b.push(t);
    }
    assert_eq!(a, b);
}

#[test]
fn golden_stream_is_platform_independent() {
    // Recorded once natively; the same test on wasm32 must give the same ids (integer RNG,
    // libm exp/ln, IEEE arithmetic, total-order sorts).
    let logits: Vec<f32> = (0..512)
        .map(|i| libm::sinf(i as f32 * 0.37) * 4.0)
        .collect();
    let mut s = Sampler::new(
        SamplerOptions {
            seed: 42,
            top_k: 0,
            top_p: 0.9,
            min_p: 0.01,
            temperature: 1.3,
            ..Default::default()
        },
        logits.len(),
    )
    .unwrap();
    let got: Vec<u32> = (0..16).map(|_| s.sample(&logits).unwrap()).collect();
    assert_eq!(got, GOLDEN);
}

const GOLDEN: [u32; 16] = [
    40, 395, 444, 294, 326, 140, 309, 22, 106, 362, 276, 20, 155, 225, 36, 139,
];

#[test]
fn random_seed_is_resolved() {
    let s = Sampler::new(SamplerOptions::default(), 4).unwrap();
    assert_ne!(s.seed(), DEFAULT_SEED);
}

#[test]
fn typical_with_underflowing_probabilities() {
    // Logits 200 apart: exp underflows to 0 for the low ones. The entropy must stay finite and the
    // result must be the dominant token, not a NaN-ordered pick.
    let mut logits = vec![-200.0f32; 100];
    logits[17] = 0.0;
    logits[42] = -0.5;
    let mut s = Sampler::new(
        opts(|o| {
            o.top_k = 0;
            o.top_p = 1.0;
            o.min_p = 0.0;
            o.typical_p = 0.9;
        }),
        100,
    )
    .unwrap();
    for _ in 0..20 {
        let t = s.sample(&logits).unwrap();
        assert!(t == 17 || t == 42, "{t}");
    }
    assert!(s.candidates().iter().all(|t| t.p.is_finite()));
}

/// The one-pass greedy and top-k forms pick what a candidate per token picks, with the same
/// candidates left (ids, logits and probabilities bit for bit), over rows with ties, signed
/// zeros and -inf, under logit bias (bans included) and penalties.
#[test]
fn one_pass_sampling_matches_a_candidate_per_token() {
    let n = 300;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let cases: Vec<SamplerOptions> = vec![
        SamplerOptions::greedy(),
        opts(|o| o.top_k = 1),
        opts(|o| o.top_k = 5),
        opts(|o| o.top_k = 40),
        opts(|o| {
            o.top_k = 40;
            o.typical_p = 0.9;
            o.min_keep = 3;
        }),
        opts(|o| {
            o.top_k = 8;
            o.logit_bias = vec![(3, f32::NEG_INFINITY), (7, 2.5), (3, 1.0), (250, -0.5)];
        }),
        opts(|o| {
            o.temperature = 0.0;
            o.logit_bias = vec![(0, f32::NEG_INFINITY), (1, 0.25)];
        }),
        opts(|o| {
            o.top_k = 12;
            o.repeat_penalty = 1.3;
            o.frequency_penalty = 0.2;
            o.presence_penalty = 0.1;
        }),
        opts(|o| {
            o.temperature = -1.0;
            o.repeat_penalty = 1.5;
            o.logit_bias = vec![(5, -3.0)];
        }),
    ];
    for (c, o) in cases.into_iter().enumerate() {
        let o = SamplerOptions { seed: 11, ..o };
        let mut fast = Sampler::new(o.clone(), n).unwrap();
        let mut full = Sampler::new(o, n).unwrap();
        for row in 0..60 {
            // Coarse values: many ties; some rows mostly -inf or zeros of both signs.
            let logits: Vec<f32> = (0..n)
                .map(|_| {
                    let r = rnd();
                    match (row % 4, r % 16) {
                        (1, 0..=12) => f32::NEG_INFINITY,
                        (2, 0..=5) => 0.0,
                        (2, 6..=11) => -0.0,
                        _ => ((r >> 8) % 64) as f32 * 0.25 - 8.0,
                    }
                })
                .collect();
            let a = fast.sample(&logits);
            let b = full.sample_reference(&logits);
            match (&a, &b) {
                (Ok(x), Ok(y)) => assert_eq!(x, y, "case {c} row {row}"),
                (Err(_), Err(_)) => {}
                _ => panic!("case {c} row {row}: {a:?} vs {b:?}"),
            }
            let key = |s: &Sampler| -> Vec<(u32, u32, u32)> {
                s.candidates()
                    .iter()
                    .map(|t| (t.id, t.logit.to_bits(), t.p.to_bits()))
                    .collect()
            };
            if let Ok(t) = a {
                assert_eq!(key(&fast), key(&full), "case {c} row {row}");
                fast.accept(t).unwrap();
                full.accept(t).unwrap();
            }
        }
    }
}

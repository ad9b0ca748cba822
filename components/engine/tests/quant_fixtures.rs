//! Bit-identical dequantization (and reference quantization) against gguf-py on fixtures from
//! real model tensors and seeded random data. See tests/fixtures/quant/README.md.

use chord_engine::quant::{GgmlType, dequantize_row, quantize_row_ref};
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant")
}

fn read_f32(path: &PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{}", path.display());
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn type_by_name(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| format!("{t:?}") == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn quant_fixtures_match_gguf_py_bit_for_bit() {
    let dir = fixture_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    let mut checked = 0;
    let mut types = std::collections::BTreeSet::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 5, "bad manifest line: {line}");
        let (name, ty, n) = (
            cols[0],
            type_by_name(cols[1]),
            cols[2].parse::<usize>().unwrap(),
        );
        let blocks = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let want = read_f32(&dir.join(format!("{name}.f32")));
        assert_eq!(want.len(), n, "{name}");

        let mut got = vec![0f32; n];
        dequantize_row(ty, &blocks, &mut got).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name} ({ty}) value {i}: engine {g:e}, gguf-py {w:e}"
            );
        }

        if cols[3] == "yes" {
            let input = read_f32(&dir.join(format!("{name}.in.f32")));
            let mut q = vec![0u8; blocks.len()];
            quantize_row_ref(ty, &input, &mut q).unwrap();
            for (b, (g, w)) in q.iter().zip(&blocks).enumerate() {
                assert_eq!(
                    g, w,
                    "{name} ({ty}) quantized byte {b} differs from gguf-py"
                );
            }
        }
        types.insert(ty.name());
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures found");
    // Every quantized weight type the engine implements is covered (Q8_1 and Q8_K, activation
    // types gguf-py cannot dequantize, are covered by the unit tests).
    for ty in GgmlType::ALL {
        if ty.is_quantized() && !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K) {
            assert!(types.contains(ty.name()), "no fixture for {ty}");
        }
    }
}

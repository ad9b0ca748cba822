//! Reader tests: every value type, v2, and hostile input.

use super::*;

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv("u8", Value::U8(7))
        .kv("i8", Value::I8(-7))
        .kv("u16", Value::U16(65535))
        .kv("i16", Value::I16(-300))
        .kv("u32", Value::U32(123456))
        .kv("i32", Value::I32(-123456))
        .kv("f32", Value::F32(1.5))
        .kv("bool", Value::Bool(true))
        .kv("str", Value::String("héllo".into()))
        .kv("u64", Value::U64(u64::MAX))
        .kv("i64", Value::I64(i64::MIN))
        .kv("f64", Value::F64(-2.25))
        .kv("arr.f32", Value::Array(Array::F32(vec![1.0, 2.0])))
        .kv(
            "arr.str",
            Value::Array(Array::String(vec!["a".into(), "".into(), "ü".into()])),
        )
        .kv(
            "arr.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![]),
            ])),
        );
    w.tensor("a", &[4, 2], GgmlType::F32, vec![0u8; 32])
        .unwrap();
    w.tensor("b", &[32], GgmlType::Q8_0, vec![1u8; 34]).unwrap();
    w
}

#[test]
fn round_trips_every_value_type() {
    let bytes = sample().to_bytes();
    let g = Gguf::read(&bytes).unwrap();
    assert_eq!(g.version, 3);
    let m = &g.metadata;
    assert_eq!(m.len(), 16);
    assert_eq!(m.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(m.get("u8"), Some(&Value::U8(7)));
    assert_eq!(m.get("i8"), Some(&Value::I8(-7)));
    assert_eq!(m.get("u16"), Some(&Value::U16(65535)));
    assert_eq!(m.get("i16"), Some(&Value::I16(-300)));
    assert_eq!(m.get_u32("u32").unwrap(), Some(123456));
    assert_eq!(m.get_int::<i64>("i32").unwrap(), Some(-123456));
    assert_eq!(m.get_f32("f32").unwrap(), Some(1.5));
    assert_eq!(m.get_bool("bool").unwrap(), Some(true));
    assert_eq!(m.get_str("str").unwrap(), Some("héllo"));
    assert_eq!(m.get_int::<u64>("u64").unwrap(), Some(u64::MAX));
    assert_eq!(m.get_int::<i64>("i64").unwrap(), Some(i64::MIN));
    assert_eq!(m.get_f32("f64").unwrap(), Some(-2.25));
    assert_eq!(
        m.get_f32_array("arr.f32").unwrap(),
        Some(&[1.0f32, 2.0][..])
    );
    assert_eq!(m.get_str_array("arr.str").unwrap().unwrap().len(), 3);
    match m.get_array("arr.nested").unwrap().unwrap() {
        Array::Array(v) => {
            assert_eq!(v[0], Array::I32(vec![1, 2]));
            assert_eq!(v[2], Array::Array(vec![]));
        }
        other => panic!("{other:?}"),
    }
    // Wrong-type and out-of-range lookups are errors, not panics.
    assert!(m.get_str("u32").is_err());
    assert!(m.get_u32("u64").is_err());
    assert!(m.get_u32("i32").is_err());
    assert_eq!(m.get_str("absent").unwrap(), None);

    assert_eq!(g.tensors.len(), 2);
    let a = g.tensor("a").unwrap();
    assert_eq!(
        (a.dims.as_slice(), a.ty, a.offset, a.size),
        (&[4u64, 2][..], GgmlType::F32, 0, 32)
    );
    let b = g.tensor("b").unwrap();
    assert_eq!((b.offset, b.size, b.n_rows(), b.n_cols()), (32, 34, 1, 32));
    assert_eq!(g.data_offset % 32, 0);
    assert_eq!(g.file_size, bytes.len() as u64);
}

#[test]
fn reads_version_2() {
    let mut bytes = sample().to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(Gguf::read(&bytes).unwrap().version, 2);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(Gguf::read(&bytes), Err(Error::Unsupported(_))));
    bytes[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(Gguf::read(&bytes), Err(Error::InvalidModel(_))));
}

#[test]
fn honours_general_alignment() {
    let mut w = GgufWriter::new();
    w.kv("general.alignment", Value::U32(64));
    w.tensor("a", &[3], GgmlType::F32, vec![0; 12]).unwrap();
    w.tensor("b", &[3], GgmlType::F32, vec![0; 12]).unwrap();
    let g = Gguf::read(&w.to_bytes()).unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_offset % 64, 0);
    assert_eq!(g.tensor("b").unwrap().offset, 64);

    let mut w = GgufWriter::new();
    w.kv("general.alignment", Value::U32(48));
    assert!(Gguf::read(&w.to_bytes()).is_err());
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().to_bytes();
    for n in 0..bytes.len() {
        let r = Gguf::read(&bytes[..n]);
        // The tensor data section's padding is optional only after the last byte of data.
        if n >= bytes.len() - 30 {
            continue;
        }
        let e = r.expect_err(&format!("prefix of {n} bytes parsed"));
        assert!(matches!(e, Error::InvalidModel(_)), "{n}: {e}");
    }
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v
}

fn kv_head(v: &mut Vec<u8>, key: &str, ty: u32) {
    v.extend_from_slice(&(key.len() as u64).to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
}

fn err(bytes: &[u8]) -> String {
    // Pad so that the count checks pass and the parser reaches the field under test.
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len() + 64, 0);
    let msg = Gguf::read(&padded)
        .expect_err("hostile input parsed")
        .to_string();
    eprintln!("{msg}");
    msg
}

#[test]
fn hostile_headers_give_clear_errors() {
    assert!(
        Gguf::read(b"".as_slice())
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
    assert!(err(b"GGML\x03\0\0\0").contains("not a GGUF"));
    assert!(err(&header(u64::MAX, 0)).contains("tensor count"));
    assert!(err(&header(0, u64::MAX)).contains("metadata count"));

    // A string length far past the end.
    let mut v = header(0, 1);
    v.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&v).contains("past the end"));

    // Unknown value type.
    let mut v = header(0, 1);
    kv_head(&mut v, "k", 99);
    assert!(err(&v).contains("unknown value type 99"));

    // Absurd array length.
    let mut v = header(0, 1);
    kv_head(&mut v, "k", 9);
    v.extend_from_slice(&6u32.to_le_bytes());
    v.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err(&v).contains("impossible"));

    // Arrays nested too deep.
    let mut v = header(0, 1);
    kv_head(&mut v, "k", 9);
    for _ in 0..100 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    assert!(err(&v).contains("nested"));

    // Bad UTF-8 in a key.
    let mut v = header(0, 1);
    v.extend_from_slice(&2u64.to_le_bytes());
    v.extend_from_slice(&[0xff, 0xfe]);
    assert!(err(&v).contains("UTF-8"));

    // Bad bool.
    let mut v = header(0, 1);
    kv_head(&mut v, "k", 7);
    v.push(2);
    assert!(err(&v).contains("bool"));

    // Duplicate key.
    let mut v = header(0, 2);
    kv_head(&mut v, "k", 0);
    v.push(1);
    kv_head(&mut v, "k", 0);
    v.push(1);
    assert!(err(&v).contains("duplicate"));
}

fn tensor_file(dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut v = header(1, 0);
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(b't');
    v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend_from_slice(&d.to_le_bytes());
    }
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    v.resize(v.len() + data, 0);
    v
}

fn terr(bytes: &[u8]) -> String {
    let msg = Gguf::read(bytes)
        .expect_err("hostile input parsed")
        .to_string();
    eprintln!("{msg}");
    msg
}

#[test]
fn hostile_tensor_infos_give_clear_errors() {
    assert!(Gguf::read(&tensor_file(&[8], 0, 0, 32)).is_ok());
    assert!(terr(&tensor_file(&[8], 0, 0, 31)).contains("past the end"));
    assert!(terr(&tensor_file(&[8], 0, 32, 32)).contains("past the end"));
    assert!(terr(&tensor_file(&[8], 0, u64::MAX - 31, 32)).contains("past the end"));
    assert!(terr(&tensor_file(&[8], 0, 4, 64)).contains("alignment"));
    assert!(terr(&tensor_file(&[8], 77, 0, 32)).contains("not supported"));
    assert!(terr(&tensor_file(&[33], 8, 0, 64)).contains("block size"));
    assert!(terr(&tensor_file(&[1 << 40, 1 << 40], 0, 0, 32)).contains("overflow"));
    assert!(terr(&tensor_file(&[u64::MAX], 0, 0, 32)).contains("overflow"));
    assert!(terr(&tensor_file(&[1, 1, 1, 1, 1], 0, 0, 32)).contains("dimensions"));
    assert!(terr(&tensor_file(&[], 0, 0, 32)).contains("dimensions"));
    // Row size that overflows u64 after multiplying by the rows.
    assert!(terr(&tensor_file(&[1 << 31, 1 << 31], 0, 0, 32)).contains("overflow"));
}

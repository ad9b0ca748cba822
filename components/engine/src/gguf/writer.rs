//! A small GGUF (v3) writer: for tests, fuzz seeds and the synthetic model generator.

use super::{Array, DEFAULT_ALIGNMENT, Value};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Builds a GGUF file in memory or streams it to a writer.
#[derive(Debug, Default)]
pub struct GgufWriter {
    kv: Vec<(String, Value)>,
    tensors: Vec<Spec>,
}

/// One tensor: its description and, unless it is streamed at write time, its data.
#[derive(Debug)]
struct Spec {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    size: u64,
    data: Option<Vec<u8>>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry.
    pub fn kv(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.kv.push((key.into(), value));
        self
    }

    /// Adds a tensor with its raw data (`dims` innermost first).
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let size = Self::tensor_size(dims, ty)?;
        if size != data.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "tensor data is {} bytes, expected {size}",
                data.len()
            )));
        }
        self.tensors.push(Spec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            size,
            data: Some(data),
        });
        Ok(self)
    }

    /// Adds a tensor whose data [`GgufWriter::write_streaming`] asks for at write time; returns its size.
    pub fn tensor_streamed(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<u64> {
        let size = Self::tensor_size(dims, ty)?;
        self.tensors.push(Spec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            size,
            data: None,
        });
        Ok(size)
    }

    /// Bytes of a tensor of this shape and type.
    pub fn tensor_size(dims: &[u64], ty: GgmlType) -> Result<u64> {
        let first = *dims
            .first()
            .ok_or_else(|| Error::InvalidArgument("tensor without dimensions".into()))?;
        let rows = dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        rows.and_then(|r| ty.row_size(first).ok()?.checked_mul(r))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("bad tensor shape {dims:?} for {}", ty.name()))
            })
    }

    fn alignment(&self) -> u64 {
        self.kv
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                ("general.alignment", Value::U32(a)) => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Streams the file to `w` (every tensor must have its data).
    pub fn write(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        self.write_streaming(w, |i, _, out| match &self.tensors[i].data {
            Some(d) => out.write_all(d),
            None => Err(std::io::Error::other("tensor without data")),
        })
    }

    /// Streams the file to `w`; `fill(index, name, out)` writes the data of each streamed tensor
    /// (exactly its size in bytes), in order, so files larger than memory can be written.
    pub fn write_streaming<W: std::io::Write>(
        &self,
        w: &mut W,
        mut fill: impl FnMut(usize, &str, &mut W) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let align = self.alignment();
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut head, k);
            head.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut head, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&(t.ty as u32).to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += t.size.div_ceil(align) * align;
        }
        pad(&mut head, align);
        w.write_all(&head)?;
        for (i, t) in self.tensors.iter().enumerate() {
            fill(i, &t.name, w)?;
            let padding = t.size.div_ceil(align) * align - t.size;
            w.write_all(&vec![0u8; padding as usize])?;
        }
        Ok(())
    }
}

fn pad(v: &mut Vec<u8>, align: u64) {
    while !(v.len() as u64).is_multiple_of(align) {
        v.push(0);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    macro_rules! each {
        ($ty:expr, $v:expr, $f:expr) => {{
            out.extend_from_slice(&($ty as u32).to_le_bytes());
            out.extend_from_slice(&($v.len() as u64).to_le_bytes());
            for x in $v {
                $f(out, x);
            }
        }};
    }
    use super::ValueType as T;
    match a {
        Array::U8(v) => each!(T::U8, v, |o: &mut Vec<u8>, x: &u8| o.push(*x)),
        Array::I8(v) => each!(T::I8, v, |o: &mut Vec<u8>, x: &i8| o.push(*x as u8)),
        Array::U16(v) => each!(T::U16, v, |o: &mut Vec<u8>, x: &u16| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(T::I16, v, |o: &mut Vec<u8>, x: &i16| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(T::U32, v, |o: &mut Vec<u8>, x: &u32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(T::I32, v, |o: &mut Vec<u8>, x: &i32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(T::F32, v, |o: &mut Vec<u8>, x: &f32| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(T::Bool, v, |o: &mut Vec<u8>, x: &bool| o.push(u8::from(*x))),
        Array::String(v) => each!(T::String, v, |o: &mut Vec<u8>, x: &String| put_str(o, x)),
        Array::Array(v) => each!(T::Array, v, put_array),
        Array::U64(v) => each!(T::U64, v, |o: &mut Vec<u8>, x: &u64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(T::I64, v, |o: &mut Vec<u8>, x: &i64| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(T::F64, v, |o: &mut Vec<u8>, x: &f64| o
            .extend_from_slice(&x.to_le_bytes())),
    }
}

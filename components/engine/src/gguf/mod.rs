//! GGUF reader (versions 2 and 3), after llama.cpp's `gguf_init_from_file_impl` (ggml/src/gguf.cpp).
//!
//! The header (metadata and tensor infos) is parsed through a [`ByteSource`], in buffered chunks, so
//! the same code runs over a memory map natively and over the `memory64-store` import in the guest;
//! tensor data is never read here. Every count, length and offset in the file is checked against the
//! bytes that remain before anything is allocated for it: hostile files give [`Error::InvalidModel`].

pub mod names;
mod source;
mod value;
mod writer;

pub use source::ByteSource;
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::GgufWriter;

use crate::quant::GgmlType;
use crate::{Error, Result};

/// The file magic, "GGUF" little-endian.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Nesting limit for arrays of arrays; deeper files are rejected rather than risking the stack.
const MAX_ARRAY_DEPTH: usize = 8;
/// Header reads go through a buffer of this size: one store call per chunk, not per field.
const CHUNK: usize = 1 << 20;

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (ggml's `ne`): `[n_cols, n_rows, …]`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data relative to [`Gguf::data_offset`].
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        // Checked when the info was read.
        self.dims.iter().product()
    }

    /// Elements per row (`ne[0]`).
    pub fn n_cols(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

impl Gguf {
    /// Parses the header of the GGUF in `src`.
    pub fn read<S: ByteSource + ?Sized>(src: &S) -> Result<Gguf> {
        let mut r = Reader::new(src);
        let magic = r.bytes::<4>("magic")?;
        if magic != MAGIC {
            return Err(Error::InvalidModel(format!(
                "not a GGUF file (magic {:02x?}, expected \"GGUF\")",
                magic
            )));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(Error::Unsupported(
                    "GGUF version 1 (convert the model to v3)".into(),
                ));
            }
            v => return Err(Error::InvalidModel(format!("unknown GGUF version {v}"))),
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // Every entry needs at least a few bytes, so counts larger than the file are lies.
        r.check_count(n_kv, 8 + 8 + 4, "metadata count")?;
        r.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, "tensor count")?;

        let mut metadata = Metadata::default();
        for i in 0..n_kv {
            let key = r.string(&format!("key of metadata entry {i}"))?;
            let what = format!("metadata {key}");
            let ty = r.value_type(&what)?;
            let value = r.value(ty, &what, 0)?;
            metadata.insert(key, value)?;
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(v) => {
                return Err(Error::InvalidModel(format!(
                    "general.alignment must be a power-of-two u32, got {}",
                    v.display_short()
                )));
            }
        };

        let mut tensors = Vec::new();
        try_reserve(&mut tensors, n_tensors, "tensor infos")?;
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("name of tensor {i}"))?;
            let info = r.tensor_info(name)?;
            if !names.insert(info.name.clone()) {
                return Err(Error::InvalidModel(format!(
                    "duplicate tensor name {:?}",
                    info.name
                )));
            }
            tensors.push(info);
        }

        let header_end = r.pos;
        let file_size = src.size();
        let data_offset = align_up(header_end, alignment)
            .ok_or_else(|| Error::InvalidModel("data offset overflows".into()))?;
        for t in &tensors {
            if !t.offset.is_multiple_of(alignment) {
                return Err(Error::InvalidModel(format!(
                    "tensor {:?} offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                )));
            }
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            if end.is_none_or(|end| end > file_size) {
                return Err(Error::InvalidModel(format!(
                    "tensor {:?} ({} bytes at data offset {}) extends past the end of the file ({file_size} bytes): truncated?",
                    t.name, t.size, t.offset
                )));
            }
        }

        Ok(Gguf {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_size,
        })
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Absolute file offset of a tensor's data.
    pub fn tensor_data_offset(&self, t: &TensorInfo) -> u64 {
        // Checked against the file size when read.
        self.data_offset + t.offset
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        let key = names::Kv::GeneralArchitecture.key("");
        self.metadata.require(&key, self.metadata.get_str(&key))
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

fn try_reserve<T>(v: &mut Vec<T>, n: u64, what: &str) -> Result<()> {
    let n = usize::try_from(n).map_err(|_| Error::OutOfMemory(format!("{what}: {n} entries")))?;
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory(format!("{what}: {n} entries")))
}

/// A buffered cursor over a [`ByteSource`].
struct Reader<'a, S: ?Sized> {
    src: &'a S,
    size: u64,
    /// Absolute position of the next byte to parse.
    pos: u64,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    buf_start: u64,
}

impl<'a, S: ByteSource + ?Sized> Reader<'a, S> {
    fn new(src: &'a S) -> Self {
        Reader {
            src,
            size: src.size(),
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn truncated(&self, n: u64, what: &str) -> Error {
        Error::InvalidModel(format!(
            "truncated file: {what} needs {n} bytes at offset {}, but the file has {} bytes",
            self.pos, self.size
        ))
    }

    /// Errors unless `count` items of at least `min_each` bytes can fit in what remains.
    fn check_count(&self, count: u64, min_each: u64, what: &str) -> Result<()> {
        if count
            .checked_mul(min_each)
            .is_none_or(|need| need > self.remaining())
        {
            return Err(Error::InvalidModel(format!(
                "{what} {count} is impossible: only {} bytes remain at offset {} (truncated or corrupt file)",
                self.remaining(),
                self.pos
            )));
        }
        Ok(())
    }

    /// Takes `n` bytes, refilling the buffer from the source as needed.
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if (n as u64) > self.remaining() {
            return Err(self.truncated(n as u64, what));
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos + n as u64 > buf_end {
            let len = usize::try_from(self.remaining().min(CHUNK.max(n) as u64))
                .map_err(|_| self.truncated(n as u64, what))?;
            self.buf.clear();
            self.buf
                .try_reserve_exact(len)
                .map_err(|_| Error::OutOfMemory(format!("{what}: {len} bytes")))?;
            self.buf.resize(len, 0);
            self.src.read_exact_at(self.pos, &mut self.buf)?;
            self.buf_start = self.pos;
        }
        let start = (self.pos - self.buf_start) as usize;
        self.pos += n as u64;
        Ok(&self.buf[start..start + n])
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.bytes(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.bytes(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(Error::InvalidModel(format!(
                "{what}: string length {len} at offset {} is past the end of the file",
                self.pos - 8
            )));
        }
        let len =
            usize::try_from(len).map_err(|_| Error::OutOfMemory(format!("{what}: {len} bytes")))?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len)
            .map_err(|_| Error::OutOfMemory(format!("{what}: {len} bytes")))?;
        // Long strings bypass the buffer in CHUNK-sized pieces.
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            bytes.extend_from_slice(self.take(n, what)?);
            left -= n;
        }
        String::from_utf8(bytes).map_err(|e| {
            Error::InvalidModel(format!(
                "{what}: invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        })
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let id = self.u32(what)?;
        ValueType::from_u32(id)
            .ok_or_else(|| Error::InvalidModel(format!("{what}: unknown value type {id}")))
    }

    fn value(&mut self, ty: ValueType, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.bytes::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.bytes::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.bytes(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.bytes(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.bytes(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.bytes(what)?)),
            ValueType::Bool => match self.bytes::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::InvalidModel(format!(
                        "{what}: invalid bool byte {b}"
                    )));
                }
            },
            ValueType::String => Value::String(self.string(what)?),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.bytes(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.bytes(what)?)),
            ValueType::Array => Value::Array(self.array(what, depth)?),
        })
    }

    fn array(&mut self, what: &str, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::InvalidModel(format!(
                "{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let ty = self.value_type(what)?;
        let n = self.u64(what)?;
        self.check_count(n, ty.min_size(), &format!("{what}: array length"))?;

        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let mut v: Vec<$t> = Vec::new();
                try_reserve(&mut v, n, what)?;
                for _ in 0..n {
                    v.push(<$t>::from_le_bytes(self.bytes(what)?));
                }
                Array::$variant(v)
            }};
        }
        Ok(match ty {
            ValueType::U8 => fixed!(U8, u8),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::new();
                try_reserve(&mut v, n, what)?;
                for _ in 0..n {
                    match self.bytes::<1>(what)?[0] {
                        0 => v.push(false),
                        1 => v.push(true),
                        b => {
                            return Err(Error::InvalidModel(format!(
                                "{what}: invalid bool byte {b}"
                            )));
                        }
                    }
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::new();
                try_reserve(&mut v, n, what)?;
                for _ in 0..n {
                    v.push(self.string(what)?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::new();
                try_reserve(&mut v, n, what)?;
                for _ in 0..n {
                    v.push(self.array(what, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    fn tensor_info(&mut self, name: String) -> Result<TensorInfo> {
        let what = format!("tensor {name:?}");
        let n_dims = self.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(Error::InvalidModel(format!(
                "{what}: {n_dims} dimensions (1..={MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&what)?);
        }
        // ggml stores ne as int64_t: reject what would be negative there, and element-count overflow.
        let n_elements = dims.iter().try_fold(1u64, |acc, &d| {
            if d > i64::MAX as u64 {
                None
            } else {
                acc.checked_mul(d)
            }
        });
        let n_elements = n_elements
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| Error::InvalidModel(format!("{what}: dimensions {dims:?} overflow")))?;
        let type_id = self.u32(&what)?;
        let ty = GgmlType::from_u32(type_id).ok_or_else(|| {
            Error::Unsupported(format!("{what}: tensor type {type_id} is not supported"))
        })?;
        let row = ty.row_size(dims[0]).map_err(|_| {
            Error::InvalidModel(format!(
                "{what}: {} elements per row is not a multiple of the {} block size {}",
                dims[0],
                ty.name(),
                ty.block_size()
            ))
        })?;
        let n_rows = n_elements.checked_div(dims[0]).unwrap_or(0);
        let size = row
            .checked_mul(n_rows)
            .ok_or_else(|| Error::InvalidModel(format!("{what}: size overflows")))?;
        let offset = self.u64(&what)?;
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        })
    }
}

#[cfg(test)]
mod tests;

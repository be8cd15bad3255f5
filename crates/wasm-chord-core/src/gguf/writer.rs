//! Writing GGUF v3 files that llama.cpp loads: the header (metadata and tensor infos) goes
//! out first, then tensor data is streamed tensor by tensor, so a 40 GB file never has to
//! sit in memory.

use std::io::Write;

use super::error::GgufError;
use super::keys;
use super::metadata::Metadata;
use super::reader::TensorInfo;
use super::value::{Array, Value};
use super::{DEFAULT_ALIGNMENT, MAGIC};

/// The version written.
const VERSION: u32 = 3;

/// A GGUF file being written. [`GgufWriter::new`] writes the header; then each tensor's data
/// follows in the order of the infos, whole ([`GgufWriter::write_tensor_data`]) or in chunks
/// ([`GgufWriter::write_tensor_chunk`] then [`GgufWriter::finish_tensor`]); [`GgufWriter::finish`]
/// checks every tensor was written.
///
/// Arrays of arrays are written as the GGUF spec defines them, but llama.cpp refuses to load
/// them ("invalid GGUF type 9"): keep them out of files meant for llama.cpp.
pub struct GgufWriter<W: Write> {
    out: W,
    alignment: usize,
    data_offset: u64,
    tensors: Vec<TensorInfo>,
    /// Index of the tensor whose data is being written.
    current: usize,
    /// Bytes of the current tensor written so far.
    written: usize,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header for `metadata` and `tensors` (name, dims and type; sizes and offsets
    /// are computed here, packed in order at `general.alignment`, default 32).
    pub fn new(mut out: W, metadata: &Metadata, mut tensors: Vec<TensorInfo>) -> Result<Self, GgufError> {
        // llama.cpp reads general.alignment only as a u32, so write nothing else.
        let alignment = match metadata.get(keys::GENERAL_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(&Value::U32(a)) if a != 0 && a.is_power_of_two() => a as usize,
            Some(&Value::U32(a)) => return Err(GgufError::BadAlignment { value: a.into() }),
            Some(other) => {
                return Err(GgufError::MetadataType {
                    key: keys::GENERAL_ALIGNMENT.to_string(),
                    expected: "u32",
                    actual: other.describe(),
                })
            }
        };

        let mut names = std::collections::HashSet::new();
        let mut offset = 0u64;
        for t in &mut tensors {
            if !names.insert(t.name.clone()) {
                return Err(GgufError::DuplicateTensor { name: t.name.clone() });
            }
            // Recompute the size so that infos built by hand cannot disagree with their dims.
            *t = TensorInfo {
                offset,
                ..TensorInfo::new(std::mem::take(&mut t.name), std::mem::take(&mut t.dims), t.ty)?
            };
            offset = offset
                .checked_add(t.n_bytes as u64)
                .and_then(|end| end.checked_next_multiple_of(alignment as u64))
                .ok_or_else(|| GgufError::DimsOverflow {
                    tensor: t.name.clone(),
                    dims: t.dims.iter().map(|&d| d as u64).collect(),
                })?;
        }

        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            put_string(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut header, value);
        }
        for t in &tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                header.extend_from_slice(&(d as u64).to_le_bytes());
            }
            header.extend_from_slice(&t.ty.ggml_id().to_le_bytes());
            header.extend_from_slice(&t.offset.to_le_bytes());
        }
        header.resize(header.len().next_multiple_of(alignment), 0);
        out.write_all(&header).map_err(GgufError::Write)?;

        Ok(Self { out, alignment, data_offset: header.len() as u64, tensors, current: 0, written: 0 })
    }

    /// The tensor infos as written, with their offsets and sizes.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// File offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The next tensor whose data is expected, if any remain.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.current)
    }

    /// Appends `bytes` to the current tensor's data.
    pub fn write_tensor_chunk(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(GgufError::TensorCount { written: self.current + 1, expected: self.tensors.len() });
        };
        if self.written + bytes.len() > t.n_bytes {
            return Err(GgufError::TensorSize {
                tensor: t.name.clone(),
                expected: t.n_bytes as u64,
                got: (self.written + bytes.len()) as u64,
            });
        }
        self.out.write_all(bytes).map_err(GgufError::Write)?;
        self.written += bytes.len();
        Ok(())
    }

    /// Ends the current tensor: its data must be complete. Pads to the alignment.
    pub fn finish_tensor(&mut self) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(GgufError::TensorCount { written: self.current + 1, expected: self.tensors.len() });
        };
        if self.written != t.n_bytes {
            return Err(GgufError::TensorSize {
                tensor: t.name.clone(),
                expected: t.n_bytes as u64,
                got: self.written as u64,
            });
        }
        let padding = t.n_bytes.next_multiple_of(self.alignment) - t.n_bytes;
        self.out.write_all(&vec![0u8; padding]).map_err(GgufError::Write)?;
        self.current += 1;
        self.written = 0;
        Ok(())
    }

    /// Writes the whole data of the next tensor.
    pub fn write_tensor_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        // Check the size before writing anything, so a wrong size leaves no partial tensor.
        if let Some(t) = self.tensors.get(self.current) {
            if self.written + bytes.len() != t.n_bytes {
                return Err(GgufError::TensorSize {
                    tensor: t.name.clone(),
                    expected: t.n_bytes as u64,
                    got: (self.written + bytes.len()) as u64,
                });
            }
        }
        self.write_tensor_chunk(bytes)?;
        self.finish_tensor()
    }

    /// Checks every tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if self.current != self.tensors.len() || self.written != 0 {
            return Err(GgufError::TensorCount { written: self.current, expected: self.tensors.len() });
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(v) => put_string(out, v),
        Value::Array(v) => put_array(out, v),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&array.element_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! numbers {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => numbers!(v),
        Array::U16(v) => numbers!(v),
        Array::I16(v) => numbers!(v),
        Array::U32(v) => numbers!(v),
        Array::I32(v) => numbers!(v),
        Array::F32(v) => numbers!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        Array::U64(v) => numbers!(v),
        Array::I64(v) => numbers!(v),
        Array::F64(v) => numbers!(v),
    }
}

//! Parsing GGUF files (versions 2 and 3): the header, metadata and tensor infos are read
//! and checked once; tensor data stays in place (memory-mapped or in the caller's bytes).

use std::collections::HashMap;
use std::ops::Deref;

use crate::quant::TensorType;

use super::error::GgufError;
use super::keys;
use super::metadata::Metadata;
use super::value::{Array, Value, ValueType};
use super::{DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};

/// Arrays nested deeper than this are rejected: recursion on a crafted file must not
/// overflow the stack, and no real file nests more than two levels.
const MAX_ARRAY_DEPTH: usize = 16;

/// Where a tensor's data lies and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length, the last dim varies slowest.
    pub dims: Vec<usize>,
    pub ty: TensorType,
    /// Byte offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data: `ty.row_bytes(row_len) * n_rows`.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// A tensor info with its size computed from `dims` and `ty` and offset 0 (the writer
    /// assigns offsets). Errors if there are more than 4 dims, the size overflows, or a row
    /// is not a whole number of blocks.
    pub fn new(name: impl Into<String>, dims: Vec<usize>, ty: TensorType) -> Result<Self, GgufError> {
        let name = name.into();
        let n_bytes = tensor_bytes(&name, &dims, ty)?;
        Ok(Self { name, dims, ty, offset: 0, n_bytes })
    }

    /// Number of elements (1 for a tensor without dims).
    pub fn n_elements(&self) -> usize {
        self.dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// Elements per row: `dims[0]`.
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of all dims but the first.
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).fold(1usize, |n, &d| n.saturating_mul(d))
    }
}

/// Bytes taken by a tensor of `dims` and `ty`, checking the dims.
fn tensor_bytes(name: &str, dims: &[usize], ty: TensorType) -> Result<usize, GgufError> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims { tensor: name.to_string(), n_dims: dims.len() as u32 });
    }
    let overflow =
        || GgufError::DimsOverflow { tensor: name.to_string(), dims: dims.iter().map(|&d| d as u64).collect() };
    let row_len = dims.first().copied().unwrap_or(1);
    // ggml stores element counts as int64; keep the total within that as llama.cpp does.
    let n_elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
    if n_elements as u64 > i64::MAX as u64 {
        return Err(overflow());
    }
    let row_bytes = ty.row_bytes(row_len).map_err(|e| match e {
        crate::error::QuantError::PartialBlock { .. } => {
            GgufError::PartialBlock { tensor: name.to_string(), ty, row_len }
        }
        _ => overflow(),
    })?;
    let n_rows = dims.iter().skip(1).try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
    row_bytes.checked_mul(n_rows).ok_or_else(overflow)
}

/// Everything in a GGUF file but the tensor data: version, alignment, metadata and
/// tensor infos, all checked against the file's length.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    version: u32,
    alignment: usize,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Parses and checks the header of the GGUF file `bytes` (the whole file: tensor ranges
    /// are checked against its length).
    pub fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        let mut cur = Cursor { bytes, pos: 0 };
        let magic = cur.take(4, "magic")?;
        if magic != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(GgufError::BadMagic { found });
        }
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let tensor_count = cur.u64("tensor count")?;
        // Name length, n_dims, type and offset: 24 bytes at least per tensor info.
        cur.check_count(tensor_count, 24, "tensor")?;
        let kv_count = cur.u64("metadata entry count")?;
        // Key length, value type and a one-byte value: 13 bytes at least per entry.
        cur.check_count(kv_count, 13, "metadata entry")?;

        let mut metadata = Metadata::new();
        for index in 0..kv_count {
            let (key, value) = read_entry(&mut cur).map_err(|e| GgufError::InEntry { index, source: Box::new(e) })?;
            metadata.push_new(key, value)?;
        }

        let alignment = match metadata.get_u64(keys::GENERAL_ALIGNMENT)? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a != 0 && a.is_power_of_two() && usize::try_from(a).is_ok() => a as usize,
            Some(value) => return Err(GgufError::BadAlignment { value }),
        };

        // tensor_count was checked against the remaining bytes, so this allocation is bounded.
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
        for index in 0..tensor_count {
            let info = read_tensor_info(&mut cur, alignment)
                .map_err(|e| GgufError::InTensorInfo { index, source: Box::new(e) })?;
            if tensor_index.contains_key(&info.name) {
                return Err(GgufError::DuplicateTensor { name: info.name });
            }
            tensor_index.insert(info.name.clone(), tensors.len());
            tensors.push(info);
        }

        let align = alignment as u64;
        let data_offset =
            (cur.pos as u64).checked_next_multiple_of(align).ok_or(GgufError::BadAlignment { value: align })?;
        check_tensor_ranges(&tensors, data_offset, bytes.len() as u64)?;

        tracing::debug!(
            version,
            n_tensors = tensors.len(),
            n_metadata = metadata.len(),
            data_offset,
            "parsed GGUF header"
        );
        Ok(Self { version, alignment, data_offset, metadata, tensors, tensor_index })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// File offset of the data section, to which tensor offsets are relative.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// `general.architecture`, which every model file has.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata
            .get_str(keys::GENERAL_ARCHITECTURE)?
            .ok_or_else(|| GgufError::MissingKey { key: keys::GENERAL_ARCHITECTURE.to_string() })
    }

    /// The file byte range of a tensor's data; `None` for a tensor of another file that
    /// lies outside this one.
    fn tensor_range(&self, info: &TensorInfo, file_len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.data_offset.checked_add(info.offset)?).ok()?;
        let end = start.checked_add(info.n_bytes)?;
        (end <= file_len).then_some(start..end)
    }
}

/// Checks every tensor lies inside the file, and that no two overlap.
fn check_tensor_ranges(tensors: &[TensorInfo], data_offset: u64, file_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes as u64));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorOutOfRange {
                    tensor: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: data_offset.saturating_add(t.offset).saturating_add(t.n_bytes as u64),
                    file_len,
                })
            }
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Both ranges lie inside the file, so this sum does not overflow.
        if a.offset + a.n_bytes as u64 > b.offset && a.n_bytes > 0 && b.n_bytes > 0 {
            return Err(GgufError::TensorsOverlap {
                first: a.name.clone(),
                first_offset: a.offset,
                first_bytes: a.n_bytes as u64,
                second: b.name.clone(),
                second_offset: b.offset,
            });
        }
    }
    Ok(())
}

fn read_entry(cur: &mut Cursor<'_>) -> Result<(String, Value), GgufError> {
    let key = cur.string()?;
    let value = cur.value_with_type(0).map_err(|e| GgufError::InKey { key: key.clone(), source: Box::new(e) })?;
    Ok((key, value))
}

fn read_tensor_info(cur: &mut Cursor<'_>, alignment: usize) -> Result<TensorInfo, GgufError> {
    let name = cur.string()?;
    let n_dims = cur.u32("tensor dimension count")?;
    if n_dims as usize > MAX_DIMS {
        return Err(GgufError::TooManyDims { tensor: name, n_dims });
    }
    let mut raw_dims = [0u64; MAX_DIMS];
    for d in raw_dims.iter_mut().take(n_dims as usize) {
        *d = cur.u64("tensor dimension")?;
    }
    let raw_dims = &raw_dims[..n_dims as usize];
    let dims: Vec<usize> = raw_dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| GgufError::DimsOverflow { tensor: name.clone(), dims: raw_dims.to_vec() })?;
    let type_id = cur.u32("tensor type")?;
    let ty = TensorType::from_ggml_id(type_id)
        .ok_or_else(|| GgufError::UnsupportedTensorType { tensor: name.clone(), id: type_id })?;
    let offset = cur.u64("tensor data offset")?;
    let n_bytes = tensor_bytes(&name, &dims, ty)?;
    if offset % alignment as u64 != 0 {
        return Err(GgufError::MisalignedTensor { tensor: name, offset, alignment });
    }
    Ok(TensorInfo { name, dims, ty, offset, n_bytes })
}

/// A read position in the file, so every error can say where it happened.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

macro_rules! read_le {
    ($name:ident, $t:ty) => {
        fn $name(&mut self, reading: &'static str) -> Result<$t, GgufError> {
            let b = self.take(std::mem::size_of::<$t>(), reading)?;
            let mut a = [0u8; std::mem::size_of::<$t>()];
            a.copy_from_slice(b);
            Ok(<$t>::from_le_bytes(a))
        }
    };
}

/// Reads `count` little-endian numbers as one slice (the count is already checked).
macro_rules! read_array {
    ($cur:expr, $count:expr, $t:ty, $variant:ident) => {{
        let size = std::mem::size_of::<$t>();
        let b = $cur.take($count * size, "array elements")?;
        Array::$variant(
            b.chunks_exact(size)
                .map(|c| {
                    let mut a = [0u8; std::mem::size_of::<$t>()];
                    a.copy_from_slice(c);
                    <$t>::from_le_bytes(a)
                })
                .collect(),
        )
    }};
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, reading: &'static str) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                offset: self.pos as u64,
                reading,
                needed: n as u64,
                available: available as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    read_le!(u8, u8);
    read_le!(u32, u32);
    read_le!(u64, u64);

    /// Checks that `count` items of at least `min_bytes` each fit in what remains, so that
    /// later allocations sized by `count` are bounded by the file size.
    fn check_count(&self, count: u64, min_bytes: u64, what: &'static str) -> Result<usize, GgufError> {
        let needed = count as u128 * min_bytes as u128;
        let available = self.remaining() as u64;
        if needed > available as u128 {
            return Err(GgufError::CountTooLarge {
                offset: self.pos as u64 - 8,
                what,
                count,
                min_bytes: needed,
                available,
            });
        }
        Ok(count as usize)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64("string length")?;
        let available = self.remaining() as u64;
        if len > available {
            return Err(GgufError::StringPastEnd { offset, len, available });
        }
        let b = self.take(len as usize, "string")?;
        std::str::from_utf8(b).map(str::to_string).map_err(|source| GgufError::NonUtf8 { offset, source })
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let offset = self.pos as u64;
        let id = self.u32("value type")?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType { offset, id })
    }

    fn bool(&mut self) -> Result<bool, GgufError> {
        let offset = self.pos as u64;
        match self.u8("bool")? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool { offset, value }),
        }
    }

    /// A type id followed by a value of that type.
    fn value_with_type(&mut self, depth: usize) -> Result<Value, GgufError> {
        let ty = self.value_type()?;
        self.value(ty, depth)
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8("u8")?),
            ValueType::I8 => Value::I8(self.u8("i8")? as i8),
            ValueType::U16 => Value::U16(self.u16("u16")?),
            ValueType::I16 => Value::I16(self.u16("i16")? as i16),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(self.u32("i32")? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32("f32")?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array(depth + 1)?),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(self.u64("i64")? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64("f64")?)),
        })
    }

    read_le!(u16, u16);

    /// An array: element type, count, elements.
    fn array(&mut self, depth: usize) -> Result<Array, GgufError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep { offset: self.pos as u64, max: MAX_ARRAY_DEPTH });
        }
        let elem = self.value_type()?;
        let count = self.u64("array length")?;
        let n = self.check_count(count, elem.min_bytes(), "array element")?;
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n, "array elements")?.to_vec()),
            ValueType::I8 => Array::I8(self.take(n, "array elements")?.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => read_array!(self, n, u16, U16),
            ValueType::I16 => read_array!(self, n, i16, I16),
            ValueType::U32 => read_array!(self, n, u32, U32),
            ValueType::I32 => read_array!(self, n, i32, I32),
            ValueType::F32 => read_array!(self, n, f32, F32),
            ValueType::U64 => read_array!(self, n, u64, U64),
            ValueType::I64 => read_array!(self, n, i64, I64),
            ValueType::F64 => read_array!(self, n, f64, F64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool()?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string()?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

/// The bytes of a GGUF file: memory-mapped on native targets, owned in the browser.
enum Storage {
    #[cfg(not(target_arch = "wasm32"))]
    Mmap(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Self::Mmap(m) => m,
            Self::Bytes(b) => b,
        }
    }
}

/// A parsed GGUF file with its tensor data in place.
pub struct GgufFile {
    storage: Storage,
    header: GgufHeader,
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only; as with every mmap reader, another process truncating
        // or rewriting the file while it is mapped is outside what we can guard against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        let header = GgufHeader::parse(&map)?;
        Ok(Self { storage: Storage::Mmap(map), header })
    }

    /// Parses a GGUF file held in memory (the browser entry point).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let header = GgufHeader::parse(&bytes)?;
        Ok(Self { storage: Storage::Bytes(bytes), header })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn version(&self) -> u32 {
        self.header.version()
    }

    pub fn alignment(&self) -> usize {
        self.header.alignment()
    }

    /// File offset of the data section, to which tensor offsets are relative.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset()
    }

    pub fn metadata(&self) -> &Metadata {
        self.header.metadata()
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        self.header.tensors()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.header.architecture()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.storage
    }

    /// Drops this process's resident pages of the file bytes `range` (the pages wholly inside
    /// it) when the file is memory-mapped: a backend that copied a weight into its own layout
    /// calls it so the file's copy does not stay in memory beside it. Reading the range again
    /// still gives the file's bytes (the pages come back from the page cache or the disk); a
    /// file held in memory (`from_bytes`) keeps its bytes and this does nothing.
    pub fn release_pages(&self, range: std::ops::Range<usize>) {
        #[cfg(all(unix, not(target_arch = "wasm32")))]
        if let Storage::Mmap(map) = &self.storage {
            // 4 KiB is the smallest page size; where pages are larger, memmap2 rounds the start
            // down to one, which at worst drops a page of a neighbour (read back when touched).
            const PAGE: usize = 4096;
            let base = map.as_ptr() as usize;
            let start = (base + range.start).next_multiple_of(PAGE) - base;
            let end = ((base + range.end.min(map.len())) / PAGE * PAGE).saturating_sub(base);
            if start < end {
                // SAFETY: the map is a read-only shared file mapping (`Mmap::map`), so dropping
                // its pages loses nothing: later reads fault the file's bytes back in. Failure
                // (an unsupported advice) only leaves the pages resident.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
        #[cfg(not(all(unix, not(target_arch = "wasm32"))))]
        let _ = range;
    }

    /// A tensor's data, without copying. Infos from this file always lie inside it (checked
    /// at parse time); an info from another file that does not gives an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.header.tensor_range(info, self.storage.len()).and_then(|r| self.storage.get(r)).unwrap_or(&[])
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("len", &self.storage.len()).field("header", &self.header).finish()
    }
}

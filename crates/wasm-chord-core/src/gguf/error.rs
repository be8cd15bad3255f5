//! Errors of the GGUF reader and writer: each names what is wrong and where (byte offset,
//! metadata key or tensor name).

use crate::quant::TensorType;

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("write failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("not a GGUF file: magic bytes are {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version}{} (wasm-chord reads versions 2 and 3)",
        if .version.swap_bytes() == 2 || .version.swap_bytes() == 3 { ", probably a big-endian file" } else { "" })]
    UnsupportedVersion { version: u32 },
    #[error("truncated file: at offset {offset} reading {reading}, need {needed} bytes but {available} remain")]
    Truncated { offset: u64, reading: &'static str, needed: u64, available: u64 },
    #[error("string at offset {offset} claims {len} bytes but only {available} remain")]
    StringPastEnd { offset: u64, len: u64, available: u64 },
    #[error("string at offset {offset} is not valid UTF-8: {source}")]
    NonUtf8 { offset: u64, source: std::str::Utf8Error },
    #[error("{what} count {count} at offset {offset} needs at least {min_bytes} bytes but only {available} remain")]
    CountTooLarge { offset: u64, what: &'static str, count: u64, min_bytes: u128, available: u64 },
    #[error("unknown metadata value type {id} at offset {offset}")]
    UnknownValueType { offset: u64, id: u32 },
    #[error("bool at offset {offset} has value {value}, expected 0 or 1")]
    InvalidBool { offset: u64, value: u8 },
    #[error("arrays nested deeper than {max} levels at offset {offset}")]
    ArrayTooDeep { offset: u64, max: usize },
    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
    #[error("metadata entry {index}: {source}")]
    InEntry { index: u64, source: Box<GgufError> },
    #[error("metadata key '{key}': {source}")]
    InKey { key: String, source: Box<GgufError> },
    #[error("tensor info {index}: {source}")]
    InTensorInfo { index: u64, source: Box<GgufError> },
    #[error("tensor '{tensor}' has {n_dims} dimensions, at most 4 are supported")]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("tensor '{tensor}' dimensions {dims:?} overflow the address space")]
    DimsOverflow { tensor: String, dims: Vec<u64> },
    #[error("unsupported tensor type {id} in tensor '{tensor}'")]
    UnsupportedTensorType { tensor: String, id: u32 },
    #[error("tensor '{tensor}': row of {row_len} elements is not a whole number of {ty} blocks ({} elements each)", .ty.block_len())]
    PartialBlock { tensor: String, ty: TensorType, row_len: usize },
    #[error("tensor '{tensor}' data at offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor { tensor: String, offset: u64, alignment: usize },
    #[error("tensor '{tensor}' data (file bytes {start}..{end}) lies past the end of the file ({file_len} bytes)")]
    TensorOutOfRange { tensor: String, start: u64, end: u64, file_len: u64 },
    #[error(
        "tensors '{first}' and '{second}' overlap (data offsets {first_offset}+{first_bytes} and {second_offset})"
    )]
    TensorsOverlap { first: String, first_offset: u64, first_bytes: u64, second: String, second_offset: u64 },
    #[error("general.alignment is {value}, must be a nonzero power of two")]
    BadAlignment { value: u64 },
    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("metadata key '{key}': expected {expected}, found {actual}")]
    MetadataType { key: String, expected: &'static str, actual: String },
    #[error("tensor '{tensor}': expected {expected} bytes of data, got {got}")]
    TensorSize { tensor: String, expected: u64, got: u64 },
    #[error("tensor data written for {written} tensors but the header lists {expected}")]
    TensorCount { written: usize, expected: usize },
}

impl GgufError {
    /// The innermost error, without the "metadata key 'x':" / "tensor info n:" context layers.
    pub fn root(&self) -> &GgufError {
        match self {
            Self::InEntry { source, .. } | Self::InKey { source, .. } | Self::InTensorInfo { source, .. } => {
                source.root()
            }
            other => other,
        }
    }
}

//! GGUF files: reading (memory-mapped or from bytes) and writing.
//!
//! A GGUF file is a header (magic, version, counts), metadata key/value pairs, tensor infos
//! (name, dims, type, offset), padding to the alignment, then the tensor data. The reader
//! checks all of it once at open and leaves tensor data in place; the writer streams tensor
//! data so multi-gigabyte files never sit in memory.

mod error;
pub mod keys;
mod metadata;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use metadata::Metadata;
pub use reader::{GgufFile, GgufHeader, TensorInfo};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;

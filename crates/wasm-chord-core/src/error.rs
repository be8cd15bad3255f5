//! Error types of the core crate: each says what failed, with which type, shape or file offset.

use crate::quant::TensorType;

/// Errors of the tensor-format layer.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{n} elements is not a whole number of {ty} blocks ({} elements each)", .ty.block_len())]
    PartialBlock { ty: TensorType, n: usize },
    #[error("a row of {n} {ty} elements overflows the address space")]
    SizeOverflow { ty: TensorType, n: usize },
    #[error("{ty}: expected {expected} bytes of blocks, got {got}")]
    BadLength { ty: TensorType, expected: usize, got: usize },
    #[error("no quantizer for {ty}")]
    NoQuantizer { ty: TensorType },
}

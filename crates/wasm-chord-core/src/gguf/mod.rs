//! GGUF files: reading (memory-mapped or from bytes) and writing.

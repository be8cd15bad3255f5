//! `wasm-chord quantize`: GGUF to GGUF of another type or llama-quantize mix, and the streaming
//! tensor writer that `gen-model` shares.
//!
//! Each tensor is dequantized and requantized a chunk of rows at a time on rayon threads; chunks
//! are written in order while the next batch is computed, so memory stays at a few chunks per
//! thread whatever the model's size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use wasm_chord_core::gguf::{GgufFile, GgufWriter, Metadata, TensorInfo};
use wasm_chord_core::quant::mix::{self, MixModel, MixOptions, MixTensor, Target};
use wasm_chord_core::quant::{self, TensorType};

use super::{byte_progress, human_bytes};

/// Convert a GGUF file to another tensor type or llama-quantize mix.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file to read.
    pub input: PathBuf,
    /// Where to write the result.
    pub output: PathBuf,
    /// A llama-quantize file type (q4_k_m, q8_0, f16, ...) or a tensor type (q4_k, ...).
    #[arg(value_name = "TYPE")]
    pub target: String,
    /// Allow requantizing tensors that are already quantized (loses more precision).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Give every matrix the file type's base type, without the mix's exceptions.
    #[arg(long)]
    pub pure: bool,
    /// Type of output.weight.
    #[arg(long, value_parser = parse_tensor_type)]
    pub output_tensor_type: Option<TensorType>,
    /// Type of token_embd.weight.
    #[arg(long, value_parser = parse_tensor_type)]
    pub token_embedding_type: Option<TensorType>,
    /// Keep output.weight in its current type.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Print the tensor types and sizes without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
}

fn parse_tensor_type(name: &str) -> Result<TensorType, String> {
    TensorType::from_name(name).ok_or_else(|| format!("unknown tensor type {name:?}"))
}

/// Produces a tensor's values as f32, a run of whole rows at a time.
pub trait RowSource: Sync {
    /// Fills `out` (a whole number of rows) with the rows from `first_row` on.
    fn rows(&self, first_row: usize, out: &mut [f32]) -> Result<()>;
}

/// Where a tensor's bytes come from.
pub enum TensorData<'a> {
    /// Bytes already in the output type, copied as they are.
    Copy(&'a [u8]),
    /// Rows to quantize into the output type.
    Rows(Box<dyn RowSource + 'a>),
}

/// One tensor of the file being written: its info (name, dims, output type) and its data.
pub struct TensorPlan<'a> {
    pub info: TensorInfo,
    pub data: TensorData<'a>,
}

/// Rows of a tensor stored in some type, dequantized on demand.
struct DequantRows<'a> {
    ty: TensorType,
    row_len: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl RowSource for DequantRows<'_> {
    fn rows(&self, first_row: usize, out: &mut [f32]) -> Result<()> {
        let n_rows = out.len() / self.row_len;
        let start = first_row * self.row_bytes;
        let bytes = self
            .data
            .get(start..start + n_rows * self.row_bytes)
            .with_context(|| format!("rows {first_row}.. lie past the tensor's {} bytes", self.data.len()))?;
        quant::dequantize(self.ty, bytes, out)?;
        Ok(())
    }
}

/// Elements per work item: big enough to amortize the hand-off, small enough that a batch of
/// a few per thread stays in cache-sized buffers.
const CHUNK_ELEMENTS: usize = 1 << 16;

/// A chunk's quantized bytes, held in u64 words so every block type's alignment is met.
struct ChunkBytes {
    words: Vec<u64>,
    len: usize,
}

impl ChunkBytes {
    fn zeroed(len: usize) -> Self {
        ChunkBytes { words: vec![0u64; len.div_ceil(8)], len }
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// Quantizes `n_rows` rows of `row_len` elements from `source` into `ty` on the current rayon
/// pool and hands the bytes to `sink` in row order. Writing one batch overlaps computing the
/// next.
pub fn stream_rows(
    ty: TensorType,
    row_len: usize,
    n_rows: usize,
    source: &dyn RowSource,
    sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
) -> Result<()> {
    let row_bytes = ty.row_bytes(row_len)?;
    let rows_per_chunk = (CHUNK_ELEMENTS / row_len.max(1)).max(1);
    let n_chunks = n_rows.div_ceil(rows_per_chunk);
    let per_batch = rayon::current_num_threads() * 4;

    let compute = |chunks: Range<usize>| -> Result<Vec<ChunkBytes>> {
        chunks
            .into_par_iter()
            .map(|c| {
                let first = c * rows_per_chunk;
                let rows = rows_per_chunk.min(n_rows - first);
                let mut values = vec![0f32; rows * row_len];
                source.rows(first, &mut values)?;
                let mut out = ChunkBytes::zeroed(rows * row_bytes);
                quant::quantize(ty, &values, out.bytes_mut())?;
                Ok(out)
            })
            .collect()
    };

    let mut pending: Vec<ChunkBytes> = Vec::new();
    let mut next = 0;
    loop {
        let batch = next..(next + per_batch).min(n_chunks);
        next = batch.end;
        let done = batch.is_empty();
        let write = || pending.iter().try_for_each(|chunk| sink(chunk.bytes()));
        let (written, computed) = rayon::join(write, || if done { Ok(Vec::new()) } else { compute(batch) });
        written?;
        pending = computed?;
        if done {
            return Ok(());
        }
    }
}

/// Writes a GGUF file of `tensors` (in this order) and `metadata`, streaming the tensor data.
/// A file that fails half-way is removed.
pub fn write_gguf(path: &Path, metadata: Metadata, tensors: Vec<TensorPlan<'_>>, threads: Option<usize>) -> Result<()> {
    let result = write_gguf_inner(path, metadata, tensors, threads);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn write_gguf_inner(path: &Path, metadata: Metadata, tensors: Vec<TensorPlan<'_>>, threads: Option<usize>) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
    let infos: Vec<TensorInfo> = tensors.iter().map(|t| t.info.clone()).collect();
    let total: u64 = infos.iter().map(|t| t.n_bytes as u64).sum();
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = GgufWriter::new(BufWriter::with_capacity(8 << 20, file), &metadata, infos.clone())
        .with_context(|| format!("writing the header of {}", path.display()))?;
    let bar = byte_progress(total, "writing");
    let started = std::time::Instant::now();
    pool.install(|| -> Result<()> {
        for t in &tensors {
            bar.set_message(t.info.name.clone());
            let mut sink = |bytes: &[u8]| -> Result<()> {
                writer.write_tensor_chunk(bytes)?;
                bar.inc(bytes.len() as u64);
                Ok(())
            };
            match &t.data {
                TensorData::Copy(bytes) => sink(bytes)?,
                TensorData::Rows(source) => {
                    stream_rows(t.info.ty, t.info.row_len(), t.info.n_rows(), source.as_ref(), &mut sink)
                        .with_context(|| format!("tensor {} ({})", t.info.name, t.info.ty))?
                }
            }
            writer.finish_tensor()?;
        }
        Ok(())
    })?;
    let mut out = writer.finish()?;
    out.flush()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({}, {} tensors) in {:.1} s, {:.0} MB/s",
        path.display(),
        human_bytes(total),
        infos.len(),
        secs,
        total as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}

/// Model facts the mix rules need, read from the input's metadata as llama.cpp reads them.
fn mix_model(file: &GgufFile) -> Result<MixModel> {
    let m = file.metadata();
    let arch = file.architecture()?.to_string();
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let n_layer = m.get_usize(&key("block_count"))?.with_context(|| format!("{} is missing", key("block_count")))?;
    // Some architectures store head counts per layer (arrays); then grouping is irrelevant here.
    let n_head = m.get_usize(&key("attention.head_count")).ok().flatten().unwrap_or(1);
    let n_head_kv = m.get_usize(&key("attention.head_count_kv")).ok().flatten().unwrap_or(n_head);
    let n_expert = m.get_usize(&key("expert_count")).ok().flatten().unwrap_or(0);
    let mut model = MixModel::llama(n_layer, n_head, n_head_kv, n_expert);
    model.is_70b &= arch == "llama";
    Ok(model)
}

pub fn run(args: Args) -> Result<()> {
    let mut target =
        Target::from_name(&args.target).with_context(|| format!("unknown type or mix {:?}", args.target))?;
    if args.pure {
        target = Target::Pure(target.default_type());
    }
    let input = GgufFile::open(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let model = mix_model(&input)?;

    let infos = input.tensors();
    let mix_tensors: Vec<MixTensor<'_>> =
        infos.iter().map(|t| MixTensor { name: &t.name, shape: &t.dims, ty: t.ty }).collect();
    let opts = MixOptions {
        output_tensor_type: args.output_tensor_type,
        token_embedding_type: args.token_embedding_type,
        leave_output_tensor: args.leave_output_tensor,
    };
    let types = mix::plan(target, &model, &mix_tensors, &opts);

    // llama-quantize writes tensors in its own order; so do we, so the files compare tensor by tensor.
    let names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
    let order = mix::llama_order(&names);

    let mut plans = Vec::with_capacity(infos.len());
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    for &i in &order {
        let (src, ty) = (&infos[i], types[i]);
        let info = TensorInfo::new(src.name.clone(), src.dims.clone(), ty)?;
        bytes_in += src.n_bytes as u64;
        bytes_out += info.n_bytes as u64;
        if args.dry_run {
            println!("{:<40} {:<22} {:>6} -> {:<6}", src.name, format!("{:?}", src.dims), src.ty.name(), ty.name());
            continue;
        }
        let data = if ty == src.ty {
            TensorData::Copy(input.tensor_data(src))
        } else {
            if !src.ty.is_float() && !args.allow_requantize {
                bail!(
                    "{} is already {}: requantizing to {} loses precision; pass --allow-requantize to do it anyway",
                    src.name,
                    src.ty,
                    ty
                );
            }
            ensure!(quant::has_quantizer(ty), "wasm-chord cannot write {ty} tensors yet ({})", src.name);
            TensorData::Rows(Box::new(DequantRows {
                ty: src.ty,
                row_len: src.row_len(),
                row_bytes: src.ty.row_bytes(src.row_len())?,
                data: input.tensor_data(src),
            }))
        };
        plans.push(TensorPlan { info, data });
    }
    eprintln!(
        "{} -> {}: {} -> {}",
        args.input.display(),
        target_label(target),
        human_bytes(bytes_in),
        human_bytes(bytes_out)
    );
    if args.dry_run {
        return Ok(());
    }

    let mut metadata = input.metadata().clone();
    metadata.insert("general.quantization_version", wasm_chord_core::gguf::Value::U32(2));
    match target.file_type() {
        Some(ftype) => {
            metadata.insert("general.file_type", wasm_chord_core::gguf::Value::U32(ftype.id()));
        }
        None => {
            metadata.remove("general.file_type");
        }
    }
    for key in ["split.no", "split.count", "split.tensors.count"] {
        metadata.remove(key);
    }
    write_gguf(&args.output, metadata, plans, args.threads)
}

fn target_label(target: Target) -> String {
    match target {
        Target::Mix(f) => f.name().to_string(),
        Target::Pure(t) => format!("{t} (pure)"),
    }
}

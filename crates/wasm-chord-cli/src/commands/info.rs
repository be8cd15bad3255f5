//! `wasm-chord info`: a GGUF file's header, metadata and tensor table, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value as Json};
use wasm_chord_core::gguf::{Array, GgufFile, Value};
use wasm_chord_core::quant::mix::FileType;

use super::human_bytes;

/// Print a GGUF file's metadata and tensor table.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Array elements shown before "..." (0 shows whole arrays).
    #[arg(long, default_value_t = 8)]
    pub array_items: usize,
    /// Leave out the tensor table.
    #[arg(long)]
    pub no_tensors: bool,
}

pub fn run(args: Args) -> Result<()> {
    let file = GgufFile::open(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let out = if args.json { to_json(&file, &args).to_string() + "\n" } else { to_text(&file, &args) };
    print!("{out}");
    Ok(())
}

/// Elements, bytes and tensor count per tensor type.
#[derive(Default)]
struct TypeTotals {
    tensors: usize,
    elements: u64,
    bytes: u64,
}

fn totals_by_type(file: &GgufFile) -> BTreeMap<&'static str, TypeTotals> {
    let mut by_type: BTreeMap<&'static str, TypeTotals> = BTreeMap::new();
    for t in file.tensors() {
        let e = by_type.entry(t.ty.name()).or_default();
        e.tensors += 1;
        e.elements += t.n_elements() as u64;
        e.bytes += t.n_bytes as u64;
    }
    by_type
}

fn to_text(file: &GgufFile, args: &Args) -> String {
    let mut s = String::new();
    let tensors = file.tensors();
    let _ = writeln!(s, "file:        {}", args.model.display());
    let _ = writeln!(s, "version:     {}", file.version());
    let _ = writeln!(s, "alignment:   {}", file.alignment());
    let _ = writeln!(s, "data offset: {}", file.data_offset());
    let _ = writeln!(s, "file size:   {} ({})", file.bytes().len(), human_bytes(file.bytes().len() as u64));
    if let Some(ftype) = file_type(file) {
        let _ = writeln!(s, "file type:   {ftype}");
    }
    let _ = writeln!(s, "\nmetadata ({} keys):", file.metadata().len());
    let key_width = file.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in file.metadata().iter() {
        let _ = writeln!(s, "  {key:<key_width$}  {:<14} {}", type_label(value), format_value(value, args.array_items));
    }
    if !args.no_tensors {
        let name_width = tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(s, "\ntensors ({}):", tensors.len());
        let _ = writeln!(s, "  {:>4}  {:<name_width$}  {:<6}  {:<22}  {:>12}", "#", "name", "type", "shape", "bytes");
        for (i, t) in tensors.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {i:>4}  {:<name_width$}  {:<6}  {:<22}  {:>12}",
                t.name,
                t.ty.name(),
                format_dims(&t.dims),
                t.n_bytes
            );
        }
    }
    let elements: u64 = tensors.iter().map(|t| t.n_elements() as u64).sum();
    let bytes: u64 = tensors.iter().map(|t| t.n_bytes as u64).sum();
    let _ = writeln!(
        s,
        "\ntotal: {} tensors, {} parameters ({:.2} M), {} bytes ({}), {:.2} bits per weight",
        tensors.len(),
        elements,
        elements as f64 / 1e6,
        bytes,
        human_bytes(bytes),
        bits_per_weight(bytes, elements)
    );
    for (ty, t) in totals_by_type(file) {
        let _ = writeln!(
            s,
            "  {ty:<6} {:>5} tensors {:>14} parameters {:>12}",
            t.tensors,
            t.elements,
            human_bytes(t.bytes)
        );
    }
    s
}

/// `general.file_type` with llama-quantize's name when it is one wasm-chord writes: "Q4_K_M (15)".
fn file_type(file: &GgufFile) -> Option<String> {
    let id = file.metadata().get_u32("general.file_type").ok().flatten()?;
    Some(match FileType::from_id(id) {
        Some(f) => format!("{f} ({id})"),
        None => format!("({id})"),
    })
}

fn bits_per_weight(bytes: u64, elements: u64) -> f64 {
    if elements == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / elements as f64
    }
}

/// Dims in GGUF order, as llama.cpp prints them: "[576, 49152]".
fn format_dims(dims: &[usize]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

/// "u32", "[string; 49152]".
fn type_label(value: &Value) -> String {
    match value {
        Value::Array(a) => format!("[{}; {}]", a.element_type().name(), a.len()),
        v => v.value_type().name().to_string(),
    }
}

/// A value for humans; arrays longer than `items` (unless 0) are cut with "... N more".
fn format_value(value: &Value, items: usize) -> String {
    match value {
        Value::U8(v) => v.to_string(),
        Value::I8(v) => v.to_string(),
        Value::U16(v) => v.to_string(),
        Value::I16(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::I32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::F32(v) => v.to_string(),
        Value::F64(v) => v.to_string(),
        Value::Bool(v) => v.to_string(),
        Value::String(v) => format!("{:?}", shorten(v, 200)),
        Value::Array(a) => format_array(a, items),
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head}…")
    }
}

fn format_array(a: &Array, items: usize) -> String {
    let shown = if items == 0 { a.len() } else { items.min(a.len()) };
    fn list<T>(v: &[T], n: usize, f: impl Fn(&T) -> String) -> Vec<String> {
        v.iter().take(n).map(f).collect()
    }
    let mut parts = match a {
        Array::U8(v) => list(v, shown, |x| x.to_string()),
        Array::I8(v) => list(v, shown, |x| x.to_string()),
        Array::U16(v) => list(v, shown, |x| x.to_string()),
        Array::I16(v) => list(v, shown, |x| x.to_string()),
        Array::U32(v) => list(v, shown, |x| x.to_string()),
        Array::I32(v) => list(v, shown, |x| x.to_string()),
        Array::U64(v) => list(v, shown, |x| x.to_string()),
        Array::I64(v) => list(v, shown, |x| x.to_string()),
        Array::F32(v) => list(v, shown, |x| x.to_string()),
        Array::F64(v) => list(v, shown, |x| x.to_string()),
        Array::Bool(v) => list(v, shown, |x| x.to_string()),
        Array::String(v) => list(v, shown, |x| format!("{:?}", shorten(x, 60))),
        Array::Array(v) => list(v, shown, |x| format_array(x, items)),
    };
    if shown < a.len() {
        parts.push(format!("... {} more", a.len() - shown));
    }
    format!("[{}]", parts.join(", "))
}

fn value_json(value: &Value, items: usize) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::F32(v) => json!(v),
        Value::F64(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::String(v) => json!(v),
        Value::Array(a) => array_json(a, items),
    }
}

/// An array as a JSON list, cut to `items` elements (unless 0).
fn array_json(a: &Array, items: usize) -> Json {
    let n = if items == 0 { a.len() } else { items.min(a.len()) };
    fn list<T: serde::Serialize>(v: &[T], n: usize) -> Json {
        json!(&v[..n.min(v.len())])
    }
    match a {
        Array::U8(v) => list(v, n),
        Array::I8(v) => list(v, n),
        Array::U16(v) => list(v, n),
        Array::I16(v) => list(v, n),
        Array::U32(v) => list(v, n),
        Array::I32(v) => list(v, n),
        Array::U64(v) => list(v, n),
        Array::I64(v) => list(v, n),
        Array::F32(v) => list(v, n),
        Array::F64(v) => list(v, n),
        Array::Bool(v) => list(v, n),
        Array::String(v) => list(v, n),
        Array::Array(v) => Json::Array(v.iter().take(n).map(|x| array_json(x, items)).collect()),
    }
}

fn to_json(file: &GgufFile, args: &Args) -> Json {
    let metadata: Vec<Json> = file
        .metadata()
        .iter()
        .map(|(key, value)| {
            let mut entry = json!({ "key": key, "type": value.value_type().name(), "value": value_json(value, args.array_items) });
            if let Value::Array(a) = value {
                entry["element_type"] = json!(a.element_type().name());
                entry["len"] = json!(a.len());
                entry["truncated"] = json!(args.array_items != 0 && a.len() > args.array_items);
            }
            entry
        })
        .collect();
    let tensors: Vec<Json> = if args.no_tensors {
        Vec::new()
    } else {
        file.tensors()
            .iter()
            .map(|t| {
                json!({ "name": t.name, "type": t.ty.name(), "shape": t.dims, "bytes": t.n_bytes, "offset": t.offset })
            })
            .collect()
    };
    let elements: u64 = file.tensors().iter().map(|t| t.n_elements() as u64).sum();
    let bytes: u64 = file.tensors().iter().map(|t| t.n_bytes as u64).sum();
    let by_type: serde_json::Map<String, Json> = totals_by_type(file)
        .into_iter()
        .map(|(ty, t)| (ty.to_string(), json!({ "tensors": t.tensors, "elements": t.elements, "bytes": t.bytes })))
        .collect();
    json!({
        "file": args.model.display().to_string(),
        "version": file.version(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "file_size": file.bytes().len(),
        "file_type": file_type(file),
        "metadata": metadata,
        "tensors": tensors,
        "totals": {
            "tensors": file.tensors().len(),
            "elements": elements,
            "bytes": bytes,
            "bits_per_weight": bits_per_weight(bytes, elements),
            "by_type": by_type,
        },
    })
}

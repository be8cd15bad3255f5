//! Per-op bitwise comparison with llama.cpp: replays every op of a dump written by
//! scripts/goldens/op_dump.py with wasm-chord's CPU backend, on llama.cpp's own inputs (the
//! dumped values of the op's sources), and reports how many of its output values differ in any
//! bit. Each op is checked in isolation, so the first op that differs is where the arithmetic
//! departs from llama.cpp's, not where an earlier difference surfaced.
//!
//! A tool more than a test: it runs only when `WASM_CHORD_OP_DUMP` names a dump folder, e.g.
//!
//! ```text
//! python3 scripts/goldens/op_dump.py --model gemma3 --out /tmp/opdump/gemma3
//! WASM_CHORD_OP_DUMP=/tmp/opdump/gemma3 cargo test --release -p wasm-chord-runtime --test op_diff -- --nocapture
//! ```
//!
//! `WASM_CHORD_OP_DUMP_STRICT=1` fails the test when any replayed op differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use wasm_chord_core::backend::{
    Activation, AttentionKind, AttentionParams, Backend, KvType, RopeMode, RopeParams, SharedBytes, WeightData,
};
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::TensorType;
use wasm_chord_cpu::{CpuBackend, CpuCache, CpuOptions, CpuTensor, CpuWeight};

fn models_dir() -> PathBuf {
    std::env::var_os("WASM_CHORD_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/wasm-chord/models")
    })
}

/// The GGUF weights, loaded on first use.
struct Weights {
    file: Arc<GgufFile>,
    loaded: BTreeMap<String, CpuWeight>,
}

struct FileBytes(Arc<GgufFile>);
impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl Weights {
    fn get(&mut self, b: &CpuBackend, name: &str) -> Option<CpuWeight> {
        if let Some(w) = self.loaded.get(name) {
            return Some(w.clone());
        }
        let info = self.file.tensor(name)?;
        let data = self.file.tensor_data(info);
        let start = data.as_ptr() as usize - self.file.bytes().as_ptr() as usize;
        let bytes = SharedBytes::new(Arc::new(FileBytes(self.file.clone())), start..start + data.len())?;
        let cols = info.dims[0];
        let rows = info.dims[1..].iter().product();
        let w = b.load_weight(WeightData { ty: info.ty, rows, cols, bytes }).ok()?;
        self.loaded.insert(name.to_string(), w.clone());
        Some(w)
    }
}

/// One dumped decode call.
struct Call {
    doc: Value,
    data: Vec<f32>,
}

impl Call {
    fn load(dir: &Path, c: usize) -> Option<Self> {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("c{c}.json"))).ok()?).ok()?;
        let data = std::fs::read(dir.join(format!("c{c}.f32"))).ok()?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some(Self { doc, data })
    }

    fn nodes(&self) -> &Vec<Value> {
        self.doc["nodes"].as_array().unwrap()
    }

    /// A node's own values (contiguous, ggml order).
    fn values(&self, i: usize) -> Option<&[f32]> {
        let n = &self.nodes()[i];
        let off = n.get("data_offset")?.as_u64()? as usize;
        let len: usize = ne(n).iter().product();
        Some(&self.data[off..off + len])
    }

    /// A source's values as the op sees them (through views), contiguous in ggml order.
    fn src(&self, s: &Value) -> Option<Vec<f32>> {
        let base = self.values(s.get("node")?.as_u64()? as usize)?;
        if s["type"].as_u64()? != 0 {
            return None;
        }
        let ne = ne(s);
        let nb: Vec<usize> = s["nb"].as_array()?.iter().map(|v| v.as_u64().unwrap() as usize / 4).collect();
        let offs = s["offs"].as_u64()? as usize / 4;
        let mut out = Vec::with_capacity(ne.iter().product());
        for i3 in 0..ne[3] {
            for i2 in 0..ne[2] {
                for i1 in 0..ne[1] {
                    for i0 in 0..ne[0] {
                        out.push(*base.get(offs + i0 * nb[0] + i1 * nb[1] + i2 * nb[2] + i3 * nb[3])?);
                    }
                }
            }
        }
        Some(out)
    }
}

fn ne(v: &Value) -> Vec<usize> {
    v["ne"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn param_f32(n: &Value, i: usize) -> f32 {
    f32::from_bits(n["op_params"][i].as_i64().unwrap() as i32 as u32)
}

fn param_i32(n: &Value, i: usize) -> i32 {
    n["op_params"][i].as_i64().unwrap() as i32
}

fn tensor(rows: usize, cols: usize, data: Vec<f32>) -> CpuTensor {
    CpuTensor { rows, cols, data }
}

/// How one replayed op compares: values differing in any bit, and the largest difference
/// relative to the largest |value| of llama.cpp's result.
#[derive(Default, Clone, Copy)]
struct Diff {
    n: usize,
    differ: usize,
    rel: f64,
}

fn diff(ours: &[f32], theirs: &[f32]) -> Diff {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(1e-30f64, |m, v| m.max(v.abs() as f64));
    let mut d = Diff { n: ours.len(), ..Diff::default() };
    for (a, b) in ours.iter().zip(theirs) {
        if a.to_bits() != b.to_bits() {
            d.differ += 1;
            d.rel = d.rel.max((*a as f64 - *b as f64).abs() / scale);
        }
    }
    d
}

/// Per-layer caches built from llama.cpp's own K and V rows, so attention sees its inputs.
struct Caches {
    k: BTreeMap<String, CpuCache>,
    v: BTreeMap<String, CpuCache>,
}

fn run(dir: &Path) -> usize {
    let calls: Vec<Call> = (0..).map_while(|c| Call::load(dir, c)).collect();
    assert!(!calls.is_empty(), "no dump in {}", dir.display());
    let b = CpuBackend::new(&CpuOptions { n_threads: 2, ggml_rounding: true, attention: AttentionKind::Standard, kv_type: KvType::F16 });
    // `model` (written by op_dump.py) names the GGUF file: a path, or a name in the models folder.
    let model = std::fs::read_to_string(dir.join("model")).unwrap_or_else(|e| panic!("{}/model: {e}", dir.display()));
    let path = models_dir().join(model.trim());
    if !path.exists() {
        eprintln!("SKIP: {} not found", path.display());
        return 0;
    }
    let mut weights = Weights { file: Arc::new(GgufFile::open(&path).unwrap()), loaded: BTreeMap::new() };
    let mut caches = Caches { k: BTreeMap::new(), v: BTreeMap::new() };
    let mut total_differ = 0;
    for (ci, call) in calls.iter().enumerate() {
        let tokens: Vec<u32> = call.doc["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let pos0 = call.doc["pos0"].as_u64().unwrap() as usize;
        let n_tok = tokens.len();
        let positions: Vec<usize> = (pos0..pos0 + n_tok).collect();
        // Per op kind: (ops compared, ops differing, values differing, worst relative).
        let mut summary: BTreeMap<String, (usize, usize, usize, f64)> = BTreeMap::new();
        let mut first: Vec<String> = Vec::new();
        let nodes = call.nodes();
        for (i, n) in nodes.iter().enumerate() {
            if n["view"].as_bool().unwrap() || n.get("data_offset").is_none() {
                // Cache writes: keep llama.cpp's rows in our caches.
                if n["op"] == "SET_ROWS" {
                    store_rows(&b, call, n, &mut caches, pos0, n_tok);
                }
                continue;
            }
            let Some(theirs) = call.values(i) else { continue };
            let op = n["op"].as_str().unwrap();
            let srcs = n["srcs"].as_array().unwrap();
            let out_ne = ne(n);
            let (cols, rows) = (out_ne[0], out_ne[1..].iter().product::<usize>());
            let leaf = |k: usize| srcs.get(k).and_then(|s| s.get("leaf")).and_then(|l| l.as_str());
            let node_src = |k: usize| srcs.get(k).and_then(|s| call.src(s));
            let (kind, ours): (String, Option<Vec<f32>>) = match op {
                "GET_ROWS" if leaf(0).is_some() && leaf(1) == Some("inp_tokens") => {
                    let w = weights.get(&b, leaf(0).unwrap()).unwrap();
                    let mut out = b.tensor(rows, cols).unwrap();
                    b.embed(&w, &tokens, 1.0, &mut out).unwrap();
                    ("GET_ROWS".into(), Some(out.data))
                }
                "SCALE" => {
                    let (s, bias) = (param_f32(n, 0), param_f32(n, 1));
                    let x = node_src(0);
                    ("SCALE".into(), x.filter(|_| bias == 0.0).map(|x| {
                        let mut t = tensor(rows, cols, x);
                        b.scale(&mut t, s).unwrap();
                        t.data
                    }))
                }
                "RMS_NORM" => {
                    let eps = param_f32(n, 0);
                    let ones = b.load_weight(WeightData { ty: TensorType::F32, rows: 1, cols, bytes: SharedBytes::from_vec(vec![1.0f32; cols].iter().flat_map(|v| v.to_le_bytes()).collect()) }).unwrap();
                    ("RMS_NORM".into(), node_src(0).map(|x| {
                        let mut out = b.tensor(rows, cols).unwrap();
                        b.rms_norm(&tensor(rows, cols, x), &ones, eps, &mut out).unwrap();
                        out.data
                    }))
                }
                "MUL" if leaf(1).is_some() && srcs[0].get("node").is_some() => {
                    // RMS_NORM then MUL by the norm weight: our fused rms_norm on the norm's input.
                    let norm = &nodes[srcs[0]["node"].as_u64().unwrap() as usize];
                    let w = weights.get(&b, leaf(1).unwrap());
                    if norm["op"] == "RMS_NORM" && w.is_some() {
                        let x = call.src(&norm["srcs"][0]);
                        ("RMS_NORM+MUL".into(), x.map(|x| {
                            let mut out = b.tensor(rows, cols).unwrap();
                            b.rms_norm(&tensor(rows, cols, x), w.as_ref().unwrap(), param_f32(norm, 0), &mut out).unwrap();
                            out.data
                        }))
                    } else {
                        ("MUL".into(), None)
                    }
                }
                "MUL_MAT" if leaf(0).is_some_and(|l| l.ends_with(".weight")) => {
                    let w = weights.get(&b, leaf(0).unwrap()).unwrap();
                    let x = node_src(1).unwrap();
                    let mut out = b.tensor(rows, cols).unwrap();
                    b.matmul(&w, None, &tensor(rows, w.cols, x), &mut out).unwrap();
                    (format!("MUL_MAT {:?}", w.ty), Some(out.data))
                }
                "ROPE" => {
                    let mode = if param_i32(n, 2) & 2 != 0 { RopeMode::Neox } else { RopeMode::Interleaved };
                    let p = RopeParams {
                        mode,
                        n_rot: param_i32(n, 1) as usize,
                        freq_base: param_f32(n, 5),
                        freq_scale: param_f32(n, 6),
                        ext_factor: param_f32(n, 7),
                        attn_factor: param_f32(n, 8),
                        beta_fast: param_f32(n, 9),
                        beta_slow: param_f32(n, 10),
                        n_ctx_orig: param_i32(n, 4) as usize,
                        freq_factors: None,
                    };
                    // ggml rows are [head_dim, n_head, n_tok]: one of our rows per token.
                    let (hd, tok_cols) = (out_ne[0], out_ne[0] * out_ne[1]);
                    ("ROPE".into(), node_src(0).filter(|_| srcs.len() == 2).map(|x| {
                        let mut t = tensor(n_tok, tok_cols, x);
                        b.rope(&mut t, hd, &positions, &p).unwrap();
                        t.data
                    }))
                }
                "ADD" if srcs.len() == 2 && srcs.iter().all(|s| s.get("node").is_some()) => {
                    let (x, y) = (node_src(0).unwrap(), node_src(1).unwrap());
                    let mut t = tensor(rows, cols, x);
                    b.add(&mut t, &tensor(rows, cols, y)).unwrap();
                    ("ADD".into(), Some(t.data))
                }
                "GEGLU" | "SWIGLU" if srcs.len() == 2 && param_i32(n, 1) == 0 => {
                    let act = if op == "GEGLU" { Activation::GeluTanh } else { Activation::Silu };
                    let (g, u) = (node_src(0).unwrap(), node_src(1).unwrap());
                    let mut out = b.tensor(rows, cols).unwrap();
                    b.act_mul(act, &tensor(rows, cols, g), &tensor(rows, cols, u), &mut out).unwrap();
                    (op.into(), Some(out.data))
                }
                "CONT" if n["name"].as_str().unwrap().starts_with("kqv_out") => {
                    ("ATTENTION".into(), attention(&b, call, i, &caches, pos0, n_tok))
                }
                _ => (op.into(), None),
            };
            let Some(ours) = ours else {
                summary.entry(format!("{kind} (not replayed)")).or_default().0 += 1;
                continue;
            };
            let d = diff(&ours, theirs);
            let e = summary.entry(kind.clone()).or_default();
            e.0 += 1;
            if d.differ > 0 {
                e.1 += 1;
                e.2 += d.differ;
                e.3 = e.3.max(d.rel);
                total_differ += 1;
                if first.len() < 12 {
                    first.push(format!("    #{i} {} {kind}: {}/{} values differ, max rel {:.2e}", n["name"].as_str().unwrap(), d.differ, d.n, d.rel));
                }
            }
        }
        println!("call {ci} ({n_tok} tokens at {pos0}):");
        for (k, (ops, bad, vals, rel)) in &summary {
            println!("  {k:<28} {ops:>4} ops, {bad:>4} differ ({vals} values, max rel {rel:.2e})");
        }
        if !first.is_empty() {
            println!("  first differing ops:\n{}", first.join("\n"));
        }
    }
    total_differ
}

/// SET_ROWS into `cache_k_l<il>` / `cache_v_l<il>`: the source rows go into our cache at the
/// call's positions (llama.cpp's cells are the positions for one sequence from 0).
fn store_rows(b: &CpuBackend, call: &Call, n: &Value, caches: &mut Caches, pos0: usize, n_tok: usize) {
    let srcs = n["srcs"].as_array().unwrap();
    let Some(name) = srcs.get(2).and_then(|s| s["leaf"].as_str()) else { return };
    let Some(x) = call.src(&srcs[0]) else { return };
    let cols = x.len() / n_tok;
    let map = if name.starts_with("cache_k") { &mut caches.k } else { &mut caches.v };
    let cache = map.entry(name.split(' ').next().unwrap().to_string()).or_insert_with(|| b.cache(4096, cols).unwrap());
    // V is written as [1, n_tok * cols] in ggml order: token-major either way.
    b.store_kv(cache, pos0, &tensor(n_tok, cols, x)).unwrap();
}

/// Our attention for the `kqv_out` node `i`: queries from the KQ product's second source,
/// keys and values from our caches, the softmax scale from SOFT_MAX.
fn attention(b: &CpuBackend, call: &Call, i: usize, caches: &Caches, pos0: usize, n_tok: usize) -> Option<Vec<f32>> {
    let nodes = call.nodes();
    let kqv = &nodes[call.nodes()[i]["srcs"][0]["node"].as_u64()? as usize];
    let sm = &nodes[kqv["srcs"][1]["node"].as_u64()? as usize];
    let kq = &nodes[sm["srcs"][0]["node"].as_u64()? as usize];
    let q_src = &kq["srcs"][1];
    let qbase = q_src["node"].as_u64()? as usize;
    let q = call.values(qbase)?.to_vec();
    let k_name = kq["srcs"][0]["leaf"].as_str()?.split(' ').next()?.to_string();
    let v_name = kqv["srcs"][0]["leaf"].as_str()?.split(' ').next()?.to_string();
    let (k, v) = (caches.k.get(&k_name)?, caches.v.get(&v_name)?);
    let qne = ne(&nodes[qbase]); // [head_dim, n_head, n_tok]
    let (hd, n_head) = (qne[0], qne[1]);
    let n_head_kv = k.cols / hd;
    let p = AttentionParams {
        n_head,
        n_head_kv,
        head_dim_k: hd,
        head_dim_v: v.cols / n_head_kv,
        scale: param_f32(sm, 0),
        softcap: None,
        q_pos0: pos0,
        window: None,
    };
    let mut out = b.tensor(n_tok, n_head * p.head_dim_v).ok()?;
    b.attention(&tensor(n_tok, n_head * hd, q), k, v, pos0 + n_tok, &p, &mut out).ok()?;
    Some(out.data)
}

#[test]
fn ops_match_llama_cpp_bitwise() {
    let Some(dir) = std::env::var_os("WASM_CHORD_OP_DUMP") else {
        eprintln!("SKIP: set WASM_CHORD_OP_DUMP to a folder written by scripts/goldens/op_dump.py");
        return;
    };
    let differ = run(Path::new(&dir));
    if std::env::var_os("WASM_CHORD_OP_DUMP_STRICT").is_some() {
        assert_eq!(differ, 0, "{differ} ops differ from llama.cpp");
    }
}

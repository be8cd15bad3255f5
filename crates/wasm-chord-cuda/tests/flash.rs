//! Flash attention (tensor-core prefill, split-KV decode) against attention computed in float64
//! on the host from the same rounded inputs, and through `Backend::attention` against the CPU
//! backend.
//!
//! Needs a GPU: without one each test prints a note and passes, unless
//! `WASM_CHORD_REQUIRE_GPU=1`, when it fails. Error is ||out - ref|| / ||ref|| over the rows
//! checked (all rows, or a sample at long sequences); every output must be finite.

use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::{AttentionKind, AttentionParams, Backend, KvType};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cpu::{CpuBackend, CpuOptions};
use wasm_chord_cuda::ops::flash::{self, FlashOptions, FlashWorkspace, KvData, KvView};
use wasm_chord_cuda::{nvrtc, ops, CacheData, CudaBackend, CudaOptions};

fn backend(opts: CudaOptions) -> Option<CudaBackend> {
    match CudaBackend::with_options(0, opts) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("WASM_CHORD_REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("WASM_CHORD_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipping CUDA flash tests: {e}");
            None
        }
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, n: usize, mag: f32) -> Vec<f32> {
    (0..n).map(|_| (r.gen::<f32>() * 2.0 - 1.0) * mag).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    F16,
    Bf16,
    Bf16Fast,
    Q8,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    d: usize,
    n_head: usize,
    n_kv: usize,
    n_q: usize,
    kv_len: usize,
    window: Option<usize>,
    softcap: Option<f32>,
    elem: Elem,
    q_mag: f32,
    kv_mag: f32,
    /// Prefill variant (FlashOptions::prefill_w4); None: the default.
    w4: Option<bool>,
    /// Run through `flash_attention_at` (position in device memory, splits planned for the
    /// capacity) with this many poisoned rows past kv_len; None: `flash_attention`, 7 rows.
    device_pad: Option<usize>,
}

impl Case {
    fn new(d: usize, n_head: usize, n_kv: usize, n_q: usize, kv_len: usize, elem: Elem) -> Self {
        Case { d, n_head, n_kv, n_q, kv_len, window: None, softcap: None, elem, q_mag: 1.0, kv_mag: 1.0, w4: None, device_pad: None }
    }
    fn window(mut self, w: usize) -> Self {
        self.window = Some(w);
        self
    }
}

/// Host copies of a cache as the kernel stores it, and its values in f64.
struct HostKv {
    bits: Vec<u16>,
    qs: Vec<i8>,
    values: Vec<f64>,
}

/// Rounds `x` (rows of `cols`) to the element type; `pad` extra rows hold poison (NaN) that a
/// kernel reading past kv_len would spread.
fn host_kv(x: &[f32], cols: usize, elem: Elem, pad: usize) -> HostKv {
    let rows = x.len() / cols;
    match elem {
        Elem::F16 => {
            let mut bits: Vec<u16> = x.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
            let values = bits.iter().map(|&b| f16::from_bits(b).to_f64()).collect();
            bits.extend(std::iter::repeat_n(0x7e00, pad * cols));
            HostKv { bits, qs: Vec::new(), values }
        }
        Elem::Bf16 | Elem::Bf16Fast => {
            let mut bits: Vec<u16> = x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
            let values = bits.iter().map(|&b| bf16::from_bits(b).to_f64()).collect();
            bits.extend(std::iter::repeat_n(0x7fc0, pad * cols));
            HostKv { bits, qs: Vec::new(), values }
        }
        Elem::Q8 => {
            let mut bytes = vec![0u8; TensorType::Q8_0.row_bytes(cols).unwrap() * rows];
            quant::quantize(TensorType::Q8_0, x, &mut bytes).unwrap();
            let (mut qs, mut bits, mut values) = (Vec::new(), Vec::new(), Vec::new());
            for block in bytes.chunks_exact(34) {
                let d = u16::from_le_bytes([block[0], block[1]]);
                bits.push(d);
                for &b in &block[2..] {
                    qs.push(b as i8);
                    values.push(b as i8 as f64 * f16::from_bits(d).to_f64());
                }
            }
            qs.extend(std::iter::repeat_n(127i8, pad * cols));
            bits.extend(std::iter::repeat_n(0x7e00, pad * cols / 32));
            HostKv { bits, qs, values }
        }
    }
}

/// Attention of query row `i`, head `h` in f64 over the stored values.
#[allow(clippy::too_many_arguments)]
fn reference_row(c: &Case, p: &AttentionParams, q: &[f32], k: &[f64], v: &[f64], i: usize, h: usize, out: &mut [f64]) {
    let d = c.d;
    let hk = h / (c.n_head / c.n_kv);
    let pos = p.q_pos0 + i;
    let lo = c.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    let qr = &q[(i * c.n_head + h) * d..][..d];
    let scores: Vec<f64> = (lo..=pos)
        .map(|j| {
            let kr = &k[(j * c.n_kv + hk) * d..][..d];
            let mut s: f64 = qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b).sum();
            if let Some(cap) = c.softcap {
                s = cap as f64 * (s / cap as f64).tanh();
            }
            s * p.scale as f64
        })
        .collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let sum: f64 = w.iter().sum();
    out.iter_mut().for_each(|o| *o = 0.0);
    for (wj, j) in w.iter().zip(lo..=pos) {
        let vr = &v[(j * c.n_kv + hk) * d..][..d];
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += wj / sum * x;
        }
    }
}

/// Rows compared with the reference: all of them, or 40 spread over a long sequence.
fn checked_rows(n_q: usize, r: &mut ChaCha8Rng) -> Vec<usize> {
    if n_q <= 64 {
        return (0..n_q).collect();
    }
    let mut rows = vec![0, 1, n_q / 2, n_q - 2, n_q - 1];
    rows.extend((0..35).map(|_| r.gen_range(0..n_q)));
    rows
}

/// Each case with both prefill variants (8 warps of 16 rows, 4 warps of 32).
fn both_variants(cases: &[Case]) -> Vec<Case> {
    cases.iter().flat_map(|&c| [Case { w4: Some(false), ..c }, Case { w4: Some(true), ..c }]).collect()
}

/// Runs one case through the flash kernels; returns the relative error.
fn run_case(g: &CudaBackend, ws: &FlashWorkspace, c: &Case, seed: u64) -> f64 {
    let mut r = rng(seed);
    let cols = c.n_kv * c.d;
    let q_pos0 = c.kv_len - c.n_q;
    let scale = 1.0 / (c.d as f32).sqrt();
    let p = AttentionParams { n_head: c.n_head, n_head_kv: c.n_kv, head_dim_k: c.d, head_dim_v: c.d, scale, softcap: c.softcap, q_pos0, window: c.window };
    let q = uniform(&mut r, c.n_q * c.n_head * c.d, c.q_mag);
    let pad = c.device_pad.unwrap_or(7);
    let k = host_kv(&uniform(&mut r, c.kv_len * cols, c.kv_mag), cols, c.elem, pad);
    let v = host_kv(&uniform(&mut r, c.kv_len * cols, c.kv_mag), cols, c.elem, pad);

    let s = g.device().stream();
    let qd = s.clone_htod(&q).unwrap();
    let mut out = s.clone_htod(&vec![f32::NAN; c.n_q * c.n_head * c.d]).unwrap();
    let (kb, vb) = (s.clone_htod(&k.bits).unwrap(), s.clone_htod(&v.bits).unwrap());
    let (kq, vq) = if c.elem == Elem::Q8 {
        (Some(s.clone_htod(&k.qs).unwrap()), Some(s.clone_htod(&v.qs).unwrap()))
    } else {
        (None, None)
    };
    fn data<'a>(elem: Elem, bits: &'a CudaSlice<u16>, qs: Option<&'a CudaSlice<i8>>) -> KvData<'a> {
        match (elem, qs) {
            (Elem::F16, _) => KvData::F16(bits),
            (Elem::Q8, Some(qs)) => KvData::Q8_0 { qs, d: bits },
            _ => KvData::Bf16(bits),
        }
    }
    let capacity = c.kv_len + pad;
    let kv = KvView { data: data(c.elem, &kb, kq.as_ref()), cols, capacity };
    let vv = KvView { data: data(c.elem, &vb, vq.as_ref()), cols, capacity };
    let opts = FlashOptions { fast_bf16: c.elem == Elem::Bf16Fast, prefill_w4: c.w4 };
    if c.device_pad.is_some() {
        let pos = s.clone_htod(&[q_pos0 as i32]).unwrap();
        // The keys of a 16k-row cache are always split: the combine kernel also quantizes the
        // output for the int8 matvec, byte for byte what `mmvq::quantize` of it writes.
        let (rows, cols) = (c.n_q, c.n_head * c.d);
        let len = ops::mmvq::scratch_len(rows, cols);
        let fused = s.clone_htod(&vec![f32::NAN; len]).unwrap();
        let base = wasm_chord_cuda::step::address(&fused, s);
        let q8 = Some((base, base + (rows * cols) as u64));
        let done = flash::flash_attention_at_q8(g.device(), ws, &qd, c.n_q, &kv, &vv, c.kv_len, &pos, &p, true, q8, &mut out).unwrap();
        assert_eq!(done, Some(true), "{c:?}: split keys, int8 output expected");
        let x = g.upload(&s.clone_dtoh(&out).unwrap(), rows, cols).unwrap();
        let mut want = g.tensor(1, len).unwrap();
        ops::mmvq::quantize(g.device(), &x, &mut want).unwrap();
        let mut want_host = Vec::new();
        g.download(&want, &mut want_host).unwrap();
        let got_q8 = s.clone_dtoh(&fused).unwrap();
        let diff = got_q8.iter().zip(&want_host).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(diff, 0, "{c:?}: {diff} of {len} int8-activation words differ from quantize_q8's");
    } else {
        flash::flash_attention(g.device(), ws, &qd, c.n_q, &kv, &vv, c.kv_len, &p, opts, &mut out).unwrap();
    }
    let got = s.clone_dtoh(&out).unwrap();
    assert!(got.iter().all(|x| x.is_finite()), "{c:?}: non-finite output (or a row never written)");

    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut refrow = vec![0.0f64; c.d];
    for i in checked_rows(c.n_q, &mut r) {
        for h in 0..c.n_head {
            reference_row(c, &p, &q, &k.values, &v.values, i, h, &mut refrow);
            let row = &got[(i * c.n_head + h) * c.d..][..c.d];
            for (&a, &b) in row.iter().zip(&refrow) {
                num += (a as f64 - b).powi(2);
                den += b * b;
            }
        }
    }
    (num / den.max(1e-300)).sqrt()
}

fn run_all(cases: &[Case], bound: impl Fn(&Case) -> f64) {
    let Some(g) = backend(CudaOptions::default()) else { return };
    let ws = FlashWorkspace::default();
    let mut failures = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        let t = std::time::Instant::now();
        let err = run_case(&g, &ws, c, 1000 + n as u64);
        let ok = err <= bound(c);
        eprintln!(
            "{} d{} heads {}/{} n_q {} kv {} window {:?} softcap {:?} {:?} w4 {:?} |q| {} |kv| {}: rel err {err:.2e} ({:.2} s)",
            if ok { "ok  " } else { "FAIL" },
            c.d,
            c.n_head,
            c.n_kv,
            c.n_q,
            c.kv_len,
            c.window,
            c.softcap,
            c.elem,
            c.w4,
            c.q_mag,
            c.kv_mag,
            t.elapsed().as_secs_f64()
        );
        if !ok {
            failures.push(format!("{c:?}: {err:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The bound for f16/bf16 inputs; bf16 with P rounded once (as FlashAttention does)
/// cannot meet it and is held to 4e-3.
fn bound(c: &Case) -> f64 {
    if c.elem == Elem::Bf16Fast {
        4e-3
    } else {
        1e-3
    }
}

#[test]
fn prefill_matches_f64() {
    use Elem::*;
    let mut cases = Vec::new();
    for elem in [F16, Bf16] {
        cases.extend([
            Case::new(64, 4, 4, 1, 1, elem),
            Case::new(64, 8, 2, 100, 100, elem),
            Case::new(128, 8, 1, 333, 333, elem).window(64),
            Case::new(128, 4, 4, 1000, 1000, elem),
            Case::new(256, 4, 1, 257, 257, elem).window(100),
            Case::new(256, 2, 2, 130, 200, elem),
            Case::new(64, 4, 4, 4096, 4096, elem).window(512),
            Case::new(128, 32, 4, 129, 129, elem),
        ]);
    }
    cases.push(Case::new(128, 8, 8, 2048, 2048, Bf16Fast));
    cases.push(Case::new(256, 4, 4, 300, 300, Bf16Fast));
    cases.push(Case::new(64, 4, 1, 515, 515, Bf16Fast));
    let mut capped = Case::new(128, 4, 2, 64, 64, F16);
    capped.softcap = Some(30.0);
    cases.push(capped);
    run_all(&both_variants(&cases), bound);
}

#[test]
fn long_prefill_32k_matches_f64_on_sampled_rows() {
    use Elem::*;
    run_all(&both_variants(&[Case::new(128, 8, 2, 32768, 32768, F16), Case::new(64, 4, 4, 32768 - 5, 32768 - 5, Bf16).window(4096)]), bound);
}

#[test]
fn decode_matches_f64() {
    use Elem::*;
    let mut cases = Vec::new();
    for elem in [F16, Q8, Bf16] {
        cases.extend([
            Case::new(64, 9, 3, 1, 1, elem),
            Case::new(128, 32, 8, 1, 32768, elem),
            Case::new(128, 32, 32, 1, 8192, elem),
            Case::new(256, 4, 1, 1, 5000, elem).window(512),
            Case::new(128, 8, 8, 3, 2000, elem),
            Case::new(64, 8, 1, 2, 777, elem),
        ]);
    }
    run_all(&cases, bound);
}

/// Decode steps replayed from a graph: one grid planned for a 16k-row cache at every depth
/// (splits past the position see no key; the poisoned rows past it would show as NaN).
#[test]
fn decode_at_device_position_matches_f64() {
    use Elem::*;
    let mut cases = Vec::new();
    for elem in [F16, Q8] {
        for (n_head, n_kv, n_q, kv_len) in [(32, 8, 1, 1), (32, 8, 1, 129), (32, 32, 1, 1000), (32, 8, 1, 8192), (8, 8, 2, 16000)] {
            let d = if n_head == 8 { 64 } else { 128 };
            cases.push(Case { device_pad: Some(16384 - kv_len), ..Case::new(d, n_head, n_kv, n_q, kv_len, elem) });
        }
    }
    run_all(&cases, bound);
}

#[test]
fn q8_0_prefill_matches_f64_over_dequantized_values() {
    use Elem::*;
    run_all(
        &both_variants(&[
            Case::new(64, 8, 2, 100, 100, Q8),
            Case::new(128, 8, 8, 1000, 1000, Q8).window(300),
            Case::new(256, 4, 1, 257, 400, Q8),
            Case::new(128, 8, 2, 32768, 32768, Q8),
        ]),
        bound,
    );
}

#[test]
fn large_magnitudes_stay_finite() {
    use Elem::*;
    let mut cases = Vec::new();
    for (q_mag, kv_mag) in [(1e2, 1e2), (1e4, 1e2), (1e3, 1e4)] {
        for elem in [F16, Bf16, Q8] {
            for (n_q, kv_len) in [(200, 200), (1, 3000)] {
                cases.push(Case { q_mag, kv_mag, ..Case::new(128, 8, 2, n_q, kv_len, elem) });
            }
        }
    }
    // Past |q| * |kv| ~ 1e4 the scores (1e6..1e9) make the softmax an argmax, and the 16-bit
    // rounding of Q (and of bf16 K) flips near-ties between keys: only finiteness is asserted
    // there (run_case checks every output); the errors are printed.
    run_all(&cases, |c| if c.q_mag * c.kv_mag <= 1e4 { 1e-2 } else { f64::INFINITY });
}

/// The q8_0 cache holds exactly what ggml's quantizer makes (values and scales).
#[test]
fn q8_0_cache_store_matches_ggml_quantizer() {
    let Some(g) = backend(CudaOptions { kv_type: KvType::Q8_0, ..CudaOptions::default() }) else { return };
    let (rows, cols) = (37, 256);
    let x = uniform(&mut rng(7), rows * cols, 3.0);
    let mut cache = g.cache(rows + 3, cols).unwrap();
    g.store_kv(&mut cache, 2, &g.upload(&x[..cols * 10], 10, cols).unwrap()).unwrap();
    g.store_kv(&mut cache, 12, &g.upload(&x[cols * 10..], rows - 10, cols).unwrap()).unwrap();
    let CacheData::Q8_0 { qs, d } = &cache.data else { panic!("not a q8_0 cache") };
    let s = g.device().stream();
    let (qs, d) = (s.clone_dtoh(qs).unwrap(), s.clone_dtoh(d).unwrap());
    let want = host_kv(&x, cols, Elem::Q8, 0);
    assert_eq!(&qs[2 * cols..(rows + 2) * cols], &want.qs[..]);
    assert_eq!(&d[2 * cols / 32..(rows + 2) * cols / 32], &want.bits[..]);
}

/// `Backend::attention` with flash (the default) against the CPU backend's flash attention,
/// f16 and q8_0 caches, with head shapes the flash kernels do not take (standard kernel).
#[test]
fn backend_attention_matches_cpu() {
    for kv_type in KvType::ALL {
        for attention in AttentionKind::ALL {
            let Some(g) = backend(CudaOptions { attention, kv_type, ..CudaOptions::default() }) else { return };
            let c = CpuBackend::new(&CpuOptions { n_threads: 2, ggml_rounding: false, attention: AttentionKind::Flash, kv_type });
            let mut r = rng(6);
            // (n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n)
            let cases = [
                (4, 4, 64, 64, None, None, 0, 7),
                (8, 2, 128, 128, None, None, 30, 1),
                (4, 1, 256, 256, Some(5), Some(30.0), 10, 4),
                (2, 2, 32, 64, Some(100), None, 300, 3),
                (9, 3, 64, 64, None, None, 0, 40),
                (4, 1, 256, 256, Some(512), None, 1500, 1),
                (8, 8, 128, 128, None, None, 0, 300),
            ];
            for (n_head, n_head_kv, dk, dv, window, softcap, q_pos0, n) in cases {
                let kv_len = q_pos0 + n;
                let p = AttentionParams { n_head, n_head_kv, head_dim_k: dk, head_dim_v: dv, scale: 0.125, softcap, q_pos0, window };
                let k = uniform(&mut r, kv_len * n_head_kv * dk, 1.0);
                let v = uniform(&mut r, kv_len * n_head_kv * dv, 1.0);
                let q = uniform(&mut r, n * n_head * dk, 1.0);
                let (mut gk, mut gv) = (g.cache(kv_len + 5, n_head_kv * dk).unwrap(), g.cache(kv_len + 5, n_head_kv * dv).unwrap());
                let (mut ck, mut cv) = (c.cache(kv_len + 5, n_head_kv * dk).unwrap(), c.cache(kv_len + 5, n_head_kv * dv).unwrap());
                // Stored in two pieces, as a prompt and then decoding would.
                let split = kv_len / 2;
                for (start, end) in [(0, split), (split, kv_len)] {
                    let kt = &k[start * n_head_kv * dk..end * n_head_kv * dk];
                    let vt = &v[start * n_head_kv * dv..end * n_head_kv * dv];
                    g.store_kv(&mut gk, start, &g.upload(kt, end - start, n_head_kv * dk).unwrap()).unwrap();
                    g.store_kv(&mut gv, start, &g.upload(vt, end - start, n_head_kv * dv).unwrap()).unwrap();
                    c.store_kv(&mut ck, start, &c.upload(kt, end - start, n_head_kv * dk).unwrap()).unwrap();
                    c.store_kv(&mut cv, start, &c.upload(vt, end - start, n_head_kv * dv).unwrap()).unwrap();
                }
                let mut go = g.upload(&vec![f32::NAN; n * n_head * dv], n, n_head * dv).unwrap();
                let mut co = c.tensor(n, n_head * dv).unwrap();
                g.attention(&g.upload(&q, n, n_head * dk).unwrap(), &gk, &gv, kv_len, &p, &mut go).unwrap();
                c.attention(&c.upload(&q, n, n_head * dk).unwrap(), &ck, &cv, kv_len, &p, &mut co).unwrap();
                let mut got = Vec::new();
                g.download(&go, &mut got).unwrap();
                let (num, den) = got.iter().zip(&co.data).fold((0.0f64, 0.0f64), |(n, d), (&a, &b)| {
                    (n + (a as f64 - b as f64).powi(2), d + (b as f64).powi(2))
                });
                let err = (num / den).sqrt();
                // The standard kernel computes in f32 from the same cache: far tighter.
                let limit = if attention == AttentionKind::Standard || !flash::supports(&p) { 1e-5 } else { 1e-3 };
                eprintln!("{} {} {p:?}: rel err {err:.2e}", kv_type.name(), attention.name());
                assert!(got.iter().all(|x| x.is_finite()) && err <= limit, "{} {} {p:?}: {err:.2e}", kv_type.name(), attention.name());
            }
        }
    }
}

/// Splits cover the keys exactly once, in whole tiles, within one wave when splitting at all.
#[test]
fn split_plan_covers_the_keys() {
    for bn in [32, 64] {
        for kv_len in [1, 63, 64, 129, 1000, 8192, 32768, 32769] {
            for (blocks, slots) in [(1, 132), (32, 396), (8, 396), (200, 132), (64, 132)] {
                let (splits, len) = flash::split_plan(blocks, kv_len, bn, slots);
                assert!(len % bn == 0 && len > 0, "{blocks} {kv_len} {bn} {slots}: len {len}");
                assert!(splits * len >= kv_len && (splits - 1) * len < kv_len.max(1), "{blocks} {kv_len}: {splits} x {len}");
                assert!(splits == 1 || splits * blocks <= slots, "{blocks} {kv_len} {slots}: {splits} splits");
            }
        }
    }
    // Decode at 8k over 32 KV heads on 132 SMs x 3 blocks: one wave of 384 blocks.
    assert_eq!(flash::split_plan(32, 8192, 64, 396), (12, 704));
}

/// ptxas' register and spill report of the flash kernels (`--ignored --nocapture`).
#[test]
#[ignore]
fn flash_resource_report() {
    for arch in ["sm_90a", "sm_80"] {
        let report = nvrtc::resource_report(&ops::flash::SOURCE, arch).unwrap();
        println!("{arch}\n{report}");
    }
}

/// Fills the kernel cache for `WASM_CHORD_ARCH` (default sm_90) so a GPU machine with the same
/// NVRTC version and include path skips compiling (`--ignored`).
#[test]
#[ignore]
fn warm_kernel_cache() {
    let arch = std::env::var("WASM_CHORD_ARCH").unwrap_or_else(|_| "sm_90".into());
    for file in wasm_chord_cuda::kernels::all() {
        nvrtc::compile(&file, &arch).unwrap();
    }
}

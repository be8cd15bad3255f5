//! Writer -> reader round trips for every value type and several tensor types, the writer's
//! checks, and the reader's error for each kind of malformed input (built byte by byte).

mod gguf_common;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::SharedBytes;
use wasm_chord_core::gguf::{keys, Array, GgufError, GgufFile, GgufWriter, Metadata, TensorInfo, Value};
use wasm_chord_core::TensorType;

fn every_value_type() -> Metadata {
    let mut md = Metadata::new();
    md.insert("general.architecture", "test");
    md.insert("t.u8", 200u8);
    md.insert("t.i8", -100i8);
    md.insert("t.u16", 60000u16);
    md.insert("t.i16", -30000i16);
    md.insert("t.u32", 4_000_000_000u32);
    md.insert("t.i32", -2_000_000_000i32);
    md.insert("t.u64", u64::MAX);
    md.insert("t.i64", i64::MIN);
    md.insert("t.f32", 1.5e-6f32);
    md.insert("t.f64", -2.25e100f64);
    md.insert("t.bool", true);
    md.insert("t.false", false);
    md.insert("t.string", "héllo\n{{ world }} ✓");
    md.insert("t.empty_string", "");
    md.insert("t.a.u8", vec![1u8, 2, 255]);
    md.insert("t.a.i8", vec![-1i8, 0, 127]);
    md.insert("t.a.u16", vec![1u16, 65535]);
    md.insert("t.a.i16", vec![-32768i16, 7]);
    md.insert("t.a.u32", vec![3u32, 4, 5]);
    md.insert("t.a.i32", vec![-3i32, 0, 3]);
    md.insert("t.a.u64", vec![u64::MAX, 0]);
    md.insert("t.a.i64", vec![i64::MIN, i64::MAX]);
    md.insert("t.a.f32", vec![0.5f32, -0.0, f32::INFINITY]);
    md.insert("t.a.f64", vec![1e-300f64, 2.0]);
    md.insert("t.a.bool", vec![true, false, true]);
    md.insert("t.a.string", vec!["a".to_string(), String::new(), "ünï".to_string()]);
    md.insert("t.a.empty", Vec::<u32>::new());
    md.insert(
        "t.a.nested",
        vec![
            Array::I32(vec![1, 2]),
            Array::String(vec!["x".into()]),
            Array::Array(vec![Array::F64(vec![3.0]), Array::Bool(vec![])]),
            Array::Array(vec![]),
        ],
    );
    md
}

fn random_bytes(rng: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

fn some_tensors() -> Vec<TensorInfo> {
    vec![
        TensorInfo::new("a.f32", vec![7, 3], TensorType::F32).unwrap(),
        TensorInfo::new("b.q4_0", vec![64, 5], TensorType::Q4_0).unwrap(),
        TensorInfo::new("c.q4_k", vec![256, 2, 3], TensorType::Q4_K).unwrap(),
        TensorInfo::new("d.f16", vec![5], TensorType::F16).unwrap(),
        TensorInfo::new("e.q6_k", vec![512, 1, 1, 2], TensorType::Q6_K).unwrap(),
        TensorInfo::new("f.scalar", vec![], TensorType::F32).unwrap(),
    ]
}

fn write(md: &Metadata, tensors: Vec<TensorInfo>, data: &[Vec<u8>]) -> Vec<u8> {
    let mut w = GgufWriter::new(Vec::new(), md, tensors).unwrap();
    for d in data {
        w.write_tensor_data(d).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn round_trip_every_value_type_and_tensor() {
    let md = every_value_type();
    let tensors = some_tensors();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let data: Vec<Vec<u8>> = tensors.iter().map(|t| random_bytes(&mut rng, t.n_bytes)).collect();
    let bytes = write(&md, tensors.clone(), &data);

    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    assert_eq!(file.metadata(), &md);
    // File order is kept.
    let keys_in: Vec<&str> = md.iter().map(|(k, _)| k).collect();
    let keys_out: Vec<&str> = file.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(keys_in, keys_out);
    assert_eq!(file.tensors().len(), tensors.len());
    for ((t, written), d) in file.tensors().iter().zip(&tensors).zip(&data) {
        assert_eq!((&t.name, &t.dims, t.ty, t.n_bytes), (&written.name, &written.dims, written.ty, written.n_bytes));
        assert_eq!(t.offset % 32, 0, "{}", t.name);
        assert_eq!(file.tensor_data(t), d.as_slice(), "{}", t.name);
    }
    let c = file.tensor("c.q4_k").unwrap();
    assert_eq!((c.row_len(), c.n_rows(), c.n_elements()), (256, 6, 1536));
    let s = file.tensor("f.scalar").unwrap();
    assert_eq!((s.row_len(), s.n_rows(), s.n_elements(), s.n_bytes), (1, 1, 1, 4));
}

#[test]
fn chunked_writes_equal_whole_writes_and_custom_alignment() {
    let mut md = every_value_type();
    md.insert(keys::GENERAL_ALIGNMENT, 128u32);
    let tensors = some_tensors();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let data: Vec<Vec<u8>> = tensors.iter().map(|t| random_bytes(&mut rng, t.n_bytes)).collect();
    let whole = write(&md, tensors.clone(), &data);

    let mut w = GgufWriter::new(Vec::new(), &md, tensors).unwrap();
    for d in &data {
        for chunk in d.chunks(13) {
            w.write_tensor_chunk(chunk).unwrap();
        }
        w.finish_tensor().unwrap();
    }
    let chunked = w.finish().unwrap();
    assert_eq!(whole, chunked);

    let file = GgufFile::from_bytes(whole).unwrap();
    assert_eq!(file.alignment(), 128);
    assert_eq!(file.data_offset() % 128, 0);
    for (t, d) in file.tensors().iter().zip(&data) {
        assert_eq!(t.offset % 128, 0);
        assert_eq!(file.tensor_data(t), d.as_slice());
    }
}

/// Released pages of a mapped file read back as the file's bytes, and releasing a file held
/// in memory leaves its bytes alone (madvise on heap memory would zero them).
#[test]
fn released_pages_read_back_the_same_bytes() {
    let md = every_value_type();
    let tensors: Vec<TensorInfo> =
        (0..3).map(|i| TensorInfo::new(format!("t{i}"), vec![3 << 16], TensorType::F32).unwrap()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let data: Vec<Vec<u8>> = tensors.iter().map(|t| random_bytes(&mut rng, t.n_bytes)).collect();
    let whole = write(&md, tensors, &data);
    let path = std::env::temp_dir().join(format!("wasm-chord-release-{}.gguf", std::process::id()));
    std::fs::write(&path, &whole).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    let held = GgufFile::from_bytes(whole.clone()).unwrap();
    for file in [mapped, held] {
        let file = std::sync::Arc::new(file);
        assert_eq!(file.bytes(), whole.as_slice());
        let t1 = file.tensor("t1").unwrap().clone();
        let start = file.tensor_data(&t1).as_ptr() as usize - file.bytes().as_ptr() as usize;
        let view = SharedBytes::from_file(file.clone(), start..start + t1.n_bytes).unwrap();
        // Part of the view, then all of it and beyond (clamped), then the whole file.
        view.release_pages(1000..100_000);
        assert_eq!(view.bytes(), data[1].as_slice());
        view.release_pages(0..usize::MAX);
        assert_eq!(view.bytes(), data[1].as_slice());
        file.release_pages(0..whole.len());
        assert_eq!(file.bytes(), whole.as_slice());
        assert!(SharedBytes::from_file(file.clone(), 0..whole.len() + 1).is_none());
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn writer_checks_sizes_counts_and_names() {
    let md = Metadata::new();
    let t = || vec![TensorInfo::new("x", vec![32, 2], TensorType::Q8_0).unwrap()];
    assert_eq!(t()[0].n_bytes, 68);

    let mut w = GgufWriter::new(Vec::new(), &md, t()).unwrap();
    let e = w.write_tensor_data(&[0; 67]).unwrap_err();
    assert!(matches!(e, GgufError::TensorSize { expected: 68, got: 67, .. }), "{e}");
    assert!(e.to_string().contains("'x'"), "{e}");
    w.write_tensor_data(&[0; 68]).unwrap();
    assert!(matches!(w.write_tensor_data(&[0; 4]), Err(GgufError::TensorCount { .. })));

    let mut w = GgufWriter::new(Vec::new(), &md, t()).unwrap();
    w.write_tensor_chunk(&[0; 60]).unwrap();
    assert!(matches!(w.write_tensor_chunk(&[0; 9]), Err(GgufError::TensorSize { got: 69, .. })));
    assert!(matches!(w.finish_tensor(), Err(GgufError::TensorSize { got: 60, .. })));

    let w = GgufWriter::new(Vec::new(), &md, t()).unwrap();
    assert!(matches!(w.finish(), Err(GgufError::TensorCount { written: 0, expected: 1 })));

    let two = vec![t().remove(0), t().remove(0)];
    assert!(matches!(GgufWriter::new(Vec::new(), &md, two), Err(GgufError::DuplicateTensor { .. })));

    let e = TensorInfo::new("y", vec![33, 2], TensorType::Q8_0).unwrap_err();
    assert!(matches!(e, GgufError::PartialBlock { row_len: 33, .. }), "{e}");
    assert!(matches!(TensorInfo::new("z", vec![1; 5], TensorType::F32), Err(GgufError::TooManyDims { n_dims: 5, .. })));
    assert!(matches!(TensorInfo::new("w", vec![usize::MAX, 2], TensorType::F32), Err(GgufError::DimsOverflow { .. })));

    for bad in [Value::U32(0), Value::U32(48)] {
        let mut md = Metadata::new();
        md.insert(keys::GENERAL_ALIGNMENT, bad);
        assert!(matches!(GgufWriter::new(Vec::new(), &md, vec![]), Err(GgufError::BadAlignment { .. })));
    }
    let mut md = Metadata::new();
    md.insert(keys::GENERAL_ALIGNMENT, 64u64);
    assert!(matches!(GgufWriter::new(Vec::new(), &md, vec![]), Err(GgufError::MetadataType { .. })));
}

#[test]
fn typed_getters_convert_losslessly_and_name_the_key() {
    let md = every_value_type();
    assert_eq!(md.get_u32("t.u8").unwrap(), Some(200));
    assert_eq!(
        md.get_u32("t.u64").unwrap_err().to_string(),
        "metadata key 't.u64': expected an integer that fits u32, found u64 18446744073709551615"
    );
    assert!(md.get_u32("t.i8").is_err());
    assert_eq!(md.get_i32("t.i16").unwrap(), Some(-30000));
    assert_eq!(md.get_i64("t.i64").unwrap(), Some(i64::MIN));
    assert_eq!(md.get_u64("t.u64").unwrap(), Some(u64::MAX));
    assert_eq!(md.get_u32("missing").unwrap(), None);
    assert_eq!(md.get_f32("t.f64").unwrap(), Some(-2.25e100f64 as f32));
    assert_eq!(md.get_f64("t.f32").unwrap(), Some(1.5e-6f32 as f64));
    assert!(md.get_f32("t.u32").is_err());
    assert_eq!(md.get_bool("t.bool").unwrap(), Some(true));
    assert_eq!(md.get_str("t.string").unwrap(), Some("héllo\n{{ world }} ✓"));
    assert_eq!(md.get_str_array("t.a.string").unwrap().map(<[String]>::len), Some(3));
    assert_eq!(md.get_f32_array("t.a.f32").unwrap().map(<[f32]>::len), Some(3));
    assert_eq!(md.get_i32_array("t.a.i32").unwrap(), Some(&[-3, 0, 3][..]));
    let e = md.get_i32_array("t.a.u32").unwrap_err().to_string();
    assert_eq!(e, "metadata key 't.a.u32': expected array of i32, found array of 3 u32");
    let e = md.get_str("t.a.string").unwrap_err().to_string();
    assert_eq!(e, "metadata key 't.a.string': expected string, found array of 3 string");
}

#[test]
fn values_display_abbreviated() {
    let long: Value = (0..100u32).collect::<Vec<_>>().into();
    assert_eq!(long.to_string(), "[100 u32s: 0, 1, 2, ...]");
    assert_eq!(format!("{long:#}").matches(", ").count(), 99);
    let short: Value = vec!["a".to_string(), "b\"".to_string()].into();
    assert_eq!(short.to_string(), r#"["a", "b\""]"#);
    assert_eq!(Value::from("x\ny").to_string(), r#""x\ny""#);
    assert_eq!(Value::F32(0.5).to_string(), "0.5");
    let nested: Value = vec![Array::U8(vec![1]), Array::Bool(vec![true])].into();
    assert_eq!(nested.to_string(), "[[1], [true]]");
}

/// Rewriting a real model (its metadata and tensors, in order) reproduces it byte for byte,
/// which shows the writer lays files out as llama.cpp's writer does.
#[test]
fn rewriting_real_models_is_byte_identical() {
    for name in [gguf_common::SMOLLM2, gguf_common::GEMMA3] {
        let Some(path) = gguf_common::model_path(name) else { continue };
        let file = GgufFile::open(&path).unwrap();
        let mut w =
            GgufWriter::new(Vec::with_capacity(file.bytes().len()), file.metadata(), file.tensors().to_vec()).unwrap();
        assert_eq!(w.tensor_infos(), file.tensors());
        for t in file.tensors() {
            w.write_tensor_data(file.tensor_data(t)).unwrap();
        }
        let out = w.finish().unwrap();
        assert_eq!(out.len(), file.bytes().len(), "{name}");
        assert!(out == file.bytes(), "{name}: rewrite differs");
    }
}

// ---- Malformed input, built byte by byte ----

struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    fn parse(&self) -> GgufError {
        GgufFile::from_bytes(self.0.clone()).unwrap_err()
    }
}

#[test]
fn malformed_headers_are_clear_errors() {
    let e = GgufFile::from_bytes(b"GGML\x03\0\0\0".to_vec()).unwrap_err();
    assert!(matches!(e, GgufError::BadMagic { found: [b'G', b'G', b'M', b'L'] }), "{e}");
    let e = Raw::header(1, 0, 0).parse();
    assert!(matches!(e, GgufError::UnsupportedVersion { version: 1 }), "{e}");
    assert!(Raw::header(3u32.swap_bytes(), 0, 0).parse().to_string().contains("big-endian"));
    let e = GgufFile::from_bytes(b"GGUF\x03\0\0\0\0\0".to_vec()).unwrap_err();
    assert_eq!(e.to_string(), "truncated file: at offset 8 reading tensor count, need 8 bytes but 2 remain");
    let e = Raw::header(3, 1 << 40, 0).parse();
    assert!(matches!(e, GgufError::CountTooLarge { offset: 8, count: 1099511627776, .. }), "{e}");
    let e = Raw::header(2, 0, u64::MAX).parse();
    assert!(matches!(e, GgufError::CountTooLarge { offset: 16, .. }), "{e}");
    // An empty v2 file is fine.
    assert_eq!(GgufFile::from_bytes(Raw::header(2, 0, 0).0).unwrap().version(), 2);
}

#[test]
fn malformed_metadata_is_a_clear_error() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"key").u32(8).u64(1000).0.extend_from_slice(b"short");
    let e = r.parse();
    assert_eq!(
        e.to_string(),
        "metadata entry 0: metadata key 'key': string at offset 39 claims 1000 bytes but only 5 remain"
    );

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(4).u64(1 << 60);
    let e = r.parse();
    assert!(matches!(e.root(), GgufError::CountTooLarge { count, .. } if *count == 1 << 60), "{e}");
    assert!(e.to_string().contains("'k'"), "{e}");

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13);
    assert!(matches!(r.parse().root(), GgufError::UnknownValueType { id: 13, offset: 33 }));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(7).0.push(2);
    assert!(matches!(r.parse().root(), GgufError::InvalidBool { value: 2, .. }));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).str(b"\xff\xfe");
    assert!(matches!(r.parse().root(), GgufError::NonUtf8 { .. }));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"\xc3").u32(4).u32(1);
    assert!(matches!(r.parse().root(), GgufError::NonUtf8 { offset: 24, .. }));

    let mut r = Raw::header(3, 0, 2);
    r.str(b"k").u32(4).u32(1).str(b"k").u32(4).u32(2);
    assert!(matches!(r.parse(), GgufError::DuplicateKey { key } if key == "k"));

    // Arrays nested 1000 deep: an error, not a stack overflow.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9);
    for _ in 0..1000 {
        r.u32(9).u64(1);
    }
    assert!(matches!(r.parse().root(), GgufError::ArrayTooDeep { .. }));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(4).u32(24);
    assert!(matches!(r.parse(), GgufError::BadAlignment { value: 24 }));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(8).str(b"32");
    assert!(matches!(r.parse(), GgufError::MetadataType { .. }));
}

/// One tensor info: name, dims, type id, offset.
fn tensor_file(infos: &[(&[u8], &[u64], u32, u64)], data_len: usize) -> Raw {
    let mut r = Raw::header(3, infos.len() as u64, 0);
    for (name, dims, ty, offset) in infos {
        r.str(name).u32(dims.len() as u32);
        for &d in *dims {
            r.u64(d);
        }
        r.u32(*ty).u64(*offset);
    }
    r.0.resize(r.0.len().next_multiple_of(32) + data_len, 0);
    r
}

#[test]
fn malformed_tensor_infos_are_clear_errors() {
    // Sane: two f32 tensors of 8 and 4 elements.
    let ok = tensor_file(&[(b"a", &[8], 0, 0), (b"b", &[2, 2], 0, 32)], 48);
    let f = GgufFile::from_bytes(ok.0.clone()).unwrap();
    assert_eq!(f.tensor("b").unwrap().n_bytes, 16);

    let e = tensor_file(&[(b"a", &[8], 0, 0), (b"b", &[2, 2], 0, 32)], 47).parse();
    assert!(matches!(&e, GgufError::TensorOutOfRange { tensor, .. } if tensor == "b"), "{e}");

    let e = tensor_file(&[(b"a", &[8], 0, 0), (b"b", &[2, 2], 0, 0)], 48).parse();
    assert!(matches!(&e, GgufError::TensorsOverlap { .. }), "{e}");
    assert!(e.to_string().contains("'a'") && e.to_string().contains("'b'"), "{e}");

    let e = tensor_file(&[(b"a", &[8], 0, 0), (b"a", &[2, 2], 0, 32)], 48).parse();
    assert!(matches!(&e, GgufError::DuplicateTensor { name } if name == "a"), "{e}");

    let e = tensor_file(&[(b"a", &[8], 0, 16)], 48).parse();
    assert!(matches!(e.root(), GgufError::MisalignedTensor { offset: 16, alignment: 32, .. }), "{e}");

    let e = tensor_file(&[(b"a", &[1, 1, 1, 1, 1], 0, 0)], 48).parse();
    assert_eq!(e.to_string(), "tensor info 0: tensor 'a' has 5 dimensions, at most 4 are supported");

    let e = tensor_file(&[(b"a", &[8], 5, 0)], 48).parse();
    assert_eq!(e.to_string(), "tensor info 0: unsupported tensor type 5 in tensor 'a'");

    let e = tensor_file(&[(b"a", &[40], 2, 0)], 48).parse();
    assert!(matches!(e.root(), GgufError::PartialBlock { row_len: 40, .. }), "{e}");

    let e = tensor_file(&[(b"a", &[1 << 32, 1 << 32, 1 << 32], 0, 0)], 48).parse();
    assert!(matches!(e.root(), GgufError::DimsOverflow { .. }), "{e}");

    let e = tensor_file(&[(b"a", &[8], 0, u64::MAX - 31)], 48).parse();
    assert!(matches!(e.root(), GgufError::TensorOutOfRange { .. }), "{e}");

    // Zero-sized tensors are allowed (llama.cpp allows them) and overlap nothing.
    let f = GgufFile::from_bytes(tensor_file(&[(b"a", &[0, 3], 0, 0), (b"b", &[8], 0, 0)], 32).0).unwrap();
    assert_eq!(f.tensor_data(f.tensor("a").unwrap()), &[] as &[u8]);
}

// Runs the simd128 kernel check (crates/wasm-chord-cpu/examples/simd128_check.rs) in node and
// exits non-zero if any simd128 result disagrees with the scalar kernel.
import { readFileSync } from "node:fs";

const target = process.env.CARGO_TARGET_DIR ?? "target";
const path = process.argv[2] ?? `${target}/wasm32-unknown-unknown/release/examples/simd128_check.wasm`;
const { instance } = await WebAssembly.instantiate(readFileSync(path), {});
const failures = instance.exports.check();
console.log(`simd128 vs scalar: ${failures} mismatching results`);
process.exit(failures === 0 ? 0 : 1);

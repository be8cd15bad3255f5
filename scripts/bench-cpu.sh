#!/usr/bin/env bash
# CPU throughput of wasm-chord against llama.cpp on the real models.
#
#   scripts/bench-cpu.sh [-p 512] [-n 128] [-t 2] [-r 3] [-s] [MODEL.gguf ...]
#
# -s adds the synthetic 1B Q4_K_M model (TinyLlama-1.1B's shape, seeded random weights), made
# once with `wasm-chord gen-model --shape 1b --quant q4_k_m` into the models directory; it takes
# about 8x as long as the two real models together, so it is off by default.
#
# For each model it runs
#   llama-bench -m MODEL -p P -n N -t T -r R -fa 0,1 -o json
#   wasm-chord bench -m MODEL -p P -n N -t T -r R --json (skipped when the binary is missing)
# and prints a table of prompt-processing (pp) and generation (tg) tokens/s with wasm-chord's
# ratio to llama.cpp, then each engine's peak resident memory over its whole run (GNU time's
# maximum RSS; llama-bench's run covers both flash-attention settings). Raw outputs and the
# tables go to bench/runs/<UTC date>-<host>/.
#
# wasm-chord is found as $WASM_CHORD_BIN, else $CARGO_TARGET_DIR/release/wasm-chord, else
# target/release/wasm-chord.
# Its --json output is the bench contract: {"pp": {"n", "tok_s", "sd"}, "tg": {...}}.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
P=512 N=128 T=2 R=3 SYNTH=0
while getopts "p:n:t:r:sh" opt; do
    case "$opt" in
        p) P="$OPTARG" ;; n) N="$OPTARG" ;; t) T="$OPTARG" ;; r) R="$OPTARG" ;; s) SYNTH=1 ;;
        *) sed -n '2,21p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

MODELS_DIR="${WASM_CHORD_MODELS:-$HOME/.cache/wasm-chord/models}"
if [ "$#" -gt 0 ]; then
    MODELS=("$@")
else
    MODELS=("$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODELS_DIR/gemma-3-270m-q4_k_m.gguf")
fi

# shellcheck source=goldens/llama_env.sh
source "$REPO/scripts/goldens/llama_env.sh"
LLAMA_BENCH="${LLAMA_BUILD_DIR:+$LLAMA_BUILD_DIR/bin/llama-bench}"
if [ -z "$LLAMA_BENCH" ] || [ ! -x "$LLAMA_BENCH" ]; then
    echo "llama-bench not found; run scripts/build-llama-cpp.sh" >&2
    LLAMA_BENCH=""
fi

WC="${WASM_CHORD_BIN:-}"
if [ -z "$WC" ]; then
    for c in "${CARGO_TARGET_DIR:-$REPO/target}/release/wasm-chord" "$REPO/target/release/wasm-chord"; do
        if [ -x "$c" ]; then WC="$c"; break; fi
    done
fi
if [ -n "$WC" ] && ! "$WC" bench --help >/dev/null 2>&1; then
    echo "$WC has no working 'bench' subcommand; skipping wasm-chord" >&2
    WC=""
fi
[ -z "$WC" ] && echo "wasm-chord binary not found (build with: cargo build --release -p wasm-chord-cli); llama.cpp only" >&2

if [ "$SYNTH" = 1 ]; then
    SYNTH_MODEL="$MODELS_DIR/synthetic-1b-q4_k_m.gguf"
    if [ ! -e "$SYNTH_MODEL" ]; then
        if [ -z "$WC" ]; then echo "-s needs the wasm-chord binary to make $SYNTH_MODEL" >&2; exit 1; fi
        echo "making $SYNTH_MODEL ..." >&2
        mkdir -p "$MODELS_DIR"
        "$WC" gen-model --shape 1b --quant q4_k_m -o "$SYNTH_MODEL.tmp" >&2 && mv "$SYNTH_MODEL.tmp" "$SYNTH_MODEL"
    fi
    MODELS+=("$SYNTH_MODEL")
fi

# BENCH_RUN names a second run of the same day apart from the first (bench/runs/<date>-<host>-<name>).
OUT="$REPO/bench/runs/$(date -u +%Y-%m-%d)-$(hostname -s 2>/dev/null || hostname)${BENCH_RUN:+-$BENCH_RUN}"
mkdir -p "$OUT"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(hostname)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    echo "nproc: $(nproc)"
    echo "args: -p $P -n $N -t $T -r $R"
    echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    [ -n "$WC" ] && echo "wasm-chord: $WC"
    [ -n "$LLAMA_BENCH" ] && echo "llama-bench: $LLAMA_BENCH"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    echo "commands:"
    for m in "${MODELS[@]}"; do
        [ -n "$LLAMA_BENCH" ] && echo "  $LLAMA_BENCH -m $m -p $P -n $N -t $T -r $R -fa 0,1 -o json"
        [ -n "$WC" ] && echo "  $WC bench -m $m -p $P -n $N -t $T -r $R --json"
    done
} > "$OUT/env.txt"

# Peak RSS in KiB of a command into $1 (empty when GNU time is missing).
TIME_BIN="$(command -v /usr/bin/time || true)"
peak_rss() {
    local out="$1"; shift
    if [ -n "$TIME_BIN" ]; then "$TIME_BIN" -f %M -o "$out" "$@"; else rm -f "$out"; "$@"; fi
}

for m in "${MODELS[@]}"; do
    base="$(basename "$m" .gguf)"
    if [ ! -e "$m" ]; then echo "missing $m" >&2; continue; fi
    if [ -n "$LLAMA_BENCH" ]; then
        echo "llama-bench $base ..." >&2
        peak_rss "$OUT/$base.llama.rss" "$LLAMA_BENCH" -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" -fa 0,1 -o json \
            > "$OUT/$base.llama.json" 2> "$OUT/$base.llama.log" \
            || echo "llama-bench failed on $m (see $OUT/$base.llama.log)" >&2
    fi
    if [ -n "$WC" ]; then
        echo "wasm-chord bench $base ..." >&2
        peak_rss "$OUT/$base.wasm-chord.rss" "$WC" bench -m "$m" -p "$P" -n "$N" -t "$T" -r "$R" --json \
            > "$OUT/$base.wasm-chord.json" 2> "$OUT/$base.wasm-chord.log" \
            || echo "wasm-chord bench failed on $m (see $OUT/$base.wasm-chord.log)" >&2
    fi
done

python3 - "$OUT" "$P" "$N" <<'EOF' | tee "$OUT/table.md"
import json, sys
from pathlib import Path

out, P, N = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def load(p):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None

def llama_rates(doc):
    """{(fa, 'pp'|'tg'): tokens/s} from llama-bench -o json."""
    rates = {}
    for r in doc or []:
        fa = int(bool(r.get("flash_attn", r.get("fa", 0))))
        kind = "pp" if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0 else "tg"
        rates[(fa, kind)] = float(r["avg_ts"])
    return rates

def wc_rates(doc):
    """{'pp'|'tg': tokens/s} from `wasm-chord bench --json` (its documented output contract)."""
    if not isinstance(doc, dict):
        return {}
    return {kind: float(doc[kind]["tok_s"]) for kind in ("pp", "tg") if isinstance(doc.get(kind), dict)}

def fmt(x):
    return "-" if x is None else f"{x:.1f}"

def rss_mib(p):
    """Peak RSS in MiB from a GNU time %M file (KiB, last line), or None."""
    try:
        return int(p.read_text().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        return None

print(f"| model | test | llama.cpp fa=0 t/s | llama.cpp fa=1 t/s | wasm-chord t/s | wasm-chord / best llama.cpp |")
print("|---|---|---|---|---|---|")
names = sorted(set(p.name.split(".llama.json")[0] for p in out.glob("*.llama.json")) |
               set(p.name.split(".wasm-chord.json")[0] for p in out.glob("*.wasm-chord.json")))
for lj in names:
    lr = llama_rates(load(out / f"{lj}.llama.json"))
    wr = wc_rates(load(out / f"{lj}.wasm-chord.json"))
    for kind, n in (("pp", P), ("tg", N)):
        l0, l1, w = lr.get((0, kind)), lr.get((1, kind)), wr.get(kind)
        best = max((x for x in (l0, l1) if x is not None), default=None)
        ratio = f"{w / best:.2f}x" if (w is not None and best) else "-"
        print(f"| {lj} | {kind}{n} | {fmt(l0)} | {fmt(l1)} | {fmt(w)} | {ratio} |")

print()
print("| model | llama.cpp peak RSS MiB | wasm-chord peak RSS MiB | wasm-chord / llama.cpp |")
print("|---|---|---|---|")
for lj in names:
    l, w = rss_mib(out / f"{lj}.llama.rss"), rss_mib(out / f"{lj}.wasm-chord.rss")
    ratio = f"{w / l:.2f}x" if (w is not None and l) else "-"
    print(f"| {lj} | {fmt(l)} | {fmt(w)} | {ratio} |")
EOF
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >> "$OUT/env.txt"
echo "results in $OUT" >&2

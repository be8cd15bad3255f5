#!/bin/bash
# Note: for tg the two sizes differ by 64 generated tokens while the figure divides by 128, so the
# printed tg ms/token are half the true ones (the ratio is unaffected).
# CPU ms per token (task-clock difference between two sizes), single thread. usage: cpu.sh MODEL pp|tg
M=$1; K=$2
B=${B:-/work/target-cpu-speed/release/wasm-chord}
L=/work/cache/llama-build/bin/llama-bench
tc() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | grep task-clock | cut -d, -f1; }
if [ $K = pp ]; then a="-p 128 -n 0"; b="-p 384 -n 0"; d=512; else a="-p 0 -n 16"; b="-p 0 -n 80"; d=128; fi
w1=$(tc $B bench -m $M $a -r 1 -t 1); w2=$(tc $B bench -m $M $b -r 1 -t 1)
l1=$(tc $L -m $M $a -r 1 -t 1 -fa 1); l2=$(tc $L -m $M $b -r 1 -t 1 -fa 1)
python3 -c "w=($w2-$w1)/$d; l=($l2-$l1)/$d; print(f'$K cpu ms/token: wc {w:.2f} llama {l:.2f} -> speed ratio {l/w:.2f}')"

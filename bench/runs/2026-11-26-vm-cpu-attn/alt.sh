#!/bin/bash
# alt.sh BIN MODEL TEST(-p 512 -n 0 | -p 0 -n 128) ROUNDS: best-of per --attn kind, alternating
B=$1; f=$2; args=$3; R=${4:-5}
for i in $(seq $R); do for a in standard flash; do
  v=$($B bench -m $f $args -r 1 -t 2 --attn $a 2>&1 | grep -E '(pp|tg)[0-9]+' | awk -F'|' '{print $6}' | awk '{print $1}')
  echo "$a $v"
done; done | awk '{ if ($2>best[$1]) best[$1]=$2 } END { printf "standard %.1f flash %.1f ratio %.2f\n", best["standard"], best["flash"], best["standard"]/best["flash"] }'

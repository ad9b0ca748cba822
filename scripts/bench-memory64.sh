#!/usr/bin/env bash
# Decode throughput of the guest's weight cache: a synthetic llama (llama-4g shape, N layers,
# Q4_0) held fully resident in the guest, then under a 512 MiB budget with prefetch off and on,
# and on the host CPU backend (one thread; the weights stay in the host's map). Median of
# R runs each, interleaved. Usage: scripts/bench-memory64.sh [LAYERS=10] [R=3] [TOKENS=16]
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${1:-10}
R=${2:-3}
N=${3:-16}
CHORD=${CHORD:-./target/release/chord}
DIR=${CHORD_BENCH_DIR:-target/bench-memory64}
mkdir -p "$DIR"
M="$DIR/llama-4g-${LAYERS}l-q4_0.gguf"
[ -f "$M" ] || "$CHORD" synth -o "$M" --preset llama-4g --n-layer "$LAYERS" --type Q4_0 --seed 42 >/dev/null
echo "model: $M ($(du -h "$M" | cut -f1)), $N tokens, median of $R runs"
run() { # prints decode tok/s and guest memory peak
  "$CHORD" --backend "$BACKEND" run -m "$M" -p "The capital of France is" -n "$N" --temperature 0 --ignore-eos --ctx 64 \
    --stats --json "$@" 2>/dev/null | tail -1 |
    python3 -c 'import sys,json; d=json.load(sys.stdin); print(round(1000*(d["completion_tokens"]-1)/d["decode_ms"],3), d["guest_memory_peak_bytes"]>>20)'
}
declare -A RES PEAK
for i in $(seq "$R"); do
  for cfg in resident "prefetch-0" "prefetch-1" cpu-1t; do
    BACKEND=guest
    case $cfg in
      resident) out=$(run --cache-budget 4G) ;;
      prefetch-0) out=$(run --cache-budget 512MiB --prefetch 0) ;;
      prefetch-1) out=$(run --cache-budget 512MiB --prefetch 1) ;;
      cpu-1t) BACKEND=cpu; out=$(run --threads 1) ;;
    esac
    RES[$cfg]+="${out% *} "
    PEAK[$cfg]=${out#* }
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${RES[resident]}" | median)
printf "%-22s %10s %8s %14s\n" config "decode t/s" ratio "guest peak MiB"
for cfg in resident "prefetch-0" "prefetch-1" cpu-1t; do
  m=$(echo "${RES[$cfg]}" | median)
  printf "%-22s %10s %8s %14s   (runs: %s)\n" "$cfg" "$m" "$(python3 -c "print(round($m/$base,3))")" "${PEAK[$cfg]}" "${RES[$cfg]}"
done

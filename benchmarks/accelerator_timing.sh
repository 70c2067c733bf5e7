#!/usr/bin/env bash
# The two accelerator figures of benchmarks/README.md in one go: training throughput, then the whole MNIST
# bake-off from nothing (empty compilation cache, scratch results folder), each line of output time-stamped.
#
#     benchmarks/accelerator_timing.sh MNIST_DIR LOG_DIR [WORK_DIR]
#
# MNIST_DIR: the four MNIST IDX .gz files. LOG_DIR gets env.txt (versions, the device), throughput.json and
# .log, bakeoff.log and bakeoff_numbers.tgz (every JSON and README of the study's folder: the per-run timings
# and numbers, without checkpoints or figures). WORK_DIR (default /tmp/ae_jax_timing) holds the study's
# folder and its compilation cache; the committed results/ are never touched.
#
# TOTAL_S (seconds, default: no limit) bounds the whole script: the study is stopped as Ctrl-C stops it
# (finished runs are kept, the time lines printed) so that the logs are still written in time. Run again
# with the same WORK_DIR and the study goes on where it stopped.
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 MNIST_DIR LOG_DIR [WORK_DIR]" >&2
    exit 2
fi
data=$1 logs=$2 work=${3:-/tmp/ae_jax_timing}
here=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
mkdir -p "$logs" "$work"
logs=$(cd "$logs" && pwd) work=$(cd "$work" && pwd) data=$(cd "$data" 2>/dev/null && pwd || echo "$data")
export PYTHONUNBUFFERED=1

stamp() { while IFS= read -r line; do printf '%(%H:%M:%S)T %s\n' -1 "$line"; done; }
left() { [ -z "${TOTAL_S:-}" ] && echo 0 || echo $(( TOTAL_S - ($(date +%s) - start) - ${1:-0} )); }
limited() {  # limited RESERVED CAP command...: the command stopped as Ctrl-C stops it (killed 20 s later if it
    # has not ended) after CAP seconds (empty: none) or the time left less RESERVED, whichever comes first.
    # --foreground: the command stays in the terminal's process group, so a Ctrl-C still reaches it.
    local reserve=$1 cap=$2 s=""; shift 2
    if [ -n "${TOTAL_S:-}" ]; then s=$(left "$reserve"); fi
    if [ -n "$cap" ] && { [ -z "$s" ] || [ "$cap" -lt "$s" ]; }; then s=$cap; fi
    if [ -z "$s" ]; then "$@"
    elif [ "$s" -gt 5 ]; then timeout --foreground -s INT -k 20 "$s" "$@"
    else echo "no time left for: $*"; return 124; fi
}

{
    date -u
    python3 -c 'import sys, jax, flax, optax, numpy, sklearn, orbax.checkpoint as o
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "orbax", getattr(o, "__version__", "?"), "numpy", numpy.__version__, "sklearn", sklearn.__version__)
print(jax.devices(), "cores:", __import__("os").cpu_count())'
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
} 2>&1 | tee "$logs/env.txt"

cd "$here" || exit 2
# Throughput first, with its compiling timed from nothing (the script leaves the cache off), at most
# THROUGHPUT_S seconds (default 150).
limited 0 "${THROUGHPUT_S:-150}" python3 benchmarks/throughput.py --epochs=2 --n-train=55000 --seeds-list=1,2,5,10 \
    --skip-torch --out="$logs/throughput.json" 2>&1 | stamp | tee "$logs/throughput.log"

echo "study starts at $(date -u +%T) with $(left) s left (0: no limit)" | stamp | tee "$logs/bakeoff.log"
( export AE_JAX_COMPILATION_CACHE="$work/xla"; time limited 30 "" python3 experiments/bakeoff.py --dataset=mnist --seeds=5 \
    --data-dir="$data" --out="$work/bake" ) 2>&1 | stamp | tee -a "$logs/bakeoff.log"

(cd "$work" && find bake \( -name checkpoints -prune \) -o \( -name '*.json' -o -name '*.md' \) -print \
    | tar czf "$logs/bakeoff_numbers.tgz" -T -)
echo "done in $(( $(date +%s) - start )) s"

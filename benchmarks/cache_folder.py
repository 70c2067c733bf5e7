"""What storing a program in the persistent compilation cache costs, by how full the folder is, with and
without JAX's size cap (the reason ae_jax/cache/compilation.py leaves the cap off).

    python benchmarks/cache_folder.py [--entries=0,1000,3000] [--programs=60]

For each folder size, a fresh process fills a new folder with that many entries (8 kB each, laid out as a
capped JAX leaves them), then compiles and stores `--programs` small distinct programs, once with
``jax_compilation_cache_max_size`` set (JAX then locks the folder and reads every entry's size and access
time on each store) and once without it. It prints the seconds of each; nothing is written.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from common import int_list

# run in a fresh process per measurement: JAX sets its cache up once per process
MEASURE = r"""
import os, sys, tempfile, time
entries, programs, capped = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "capped"
import jax, jax.numpy as jnp
folder = tempfile.mkdtemp(prefix="ae_jax_cache_bench_")
stamp = time.time_ns().to_bytes(8, "little")
for i in range(entries):
    with open(os.path.join(folder, f"k{i:06d}-cache"), "wb") as f:
        f.write(os.urandom(8000))
    with open(os.path.join(folder, f"k{i:06d}-atime"), "wb") as f:
        f.write(stamp)
jax.config.update("jax_compilation_cache_dir", folder)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
if capped:
    jax.config.update("jax_compilation_cache_max_size", 2 << 30)
x = jnp.ones((3, 5))
jax.jit(lambda a: a + 1.0)(x).block_until_ready()  # the backend started, outside the timing
start = time.perf_counter()
for k in range(programs):
    jax.jit(lambda a, k=k: jnp.sin(a) * (k + 2.0) + k)(x).block_until_ready()
print(time.perf_counter() - start)
import shutil; shutil.rmtree(folder, ignore_errors=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int_list, default=[0, 1000, 3000], help="folder sizes (comma list)")
    ap.add_argument("--programs", type=int, default=60, help="programs compiled and stored per measurement")
    args = ap.parse_args(argv)
    if args.programs < 1 or min(args.entries) < 0:
        ap.error("--programs must be at least 1 and --entries at least 0")
    print(f"seconds to compile and store {args.programs} small programs into a folder of N entries")
    print(f"{'N':>6}  {'capped':>8}  {'uncapped':>8}")
    for n in args.entries:
        row = []
        for mode in ("capped", "uncapped"):
            out = subprocess.run([sys.executable, "-c", MEASURE, str(n), str(args.programs), mode],
                                 capture_output=True, text=True, check=True)
            row.append(float(out.stdout.strip().splitlines()[-1]))
        print(f"{n:>6}  {row[0]:>8.1f}  {row[1]:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

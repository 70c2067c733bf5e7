"""What the latent-structure task's UMAP fits cost, one after another and side by side in worker processes.

    python benchmarks/umap_workers.py                              # 5 fits of 10 000 x 20 codes; 1 and 2..cores workers
    python benchmarks/umap_workers.py --points=500 --workers=1,2   # quick check

The fits are those of one bake-off run: --fits seeds' codes (random normal,
--points x --dim, the size of the MNIST test set at n = 20 by default), each
with its own seed, through ``ae_jax.tasks.umap_pool.embed``. For each worker count
of --workers, a fresh set of worker processes (1: this process) embeds them
twice: "first" pays the numba compilation of every new process, "again" is
the steady state of a study, where the workers are kept from run to run. The
embeddings of every count are checked to be identical to the first count's.
The JSON (default benchmarks/umap_workers.json) holds the rows and the machine.
"""
from __future__ import annotations

import datetime
import os
import time

from common import busy, command_text, environment, int_list, write_json

from ae_jax.cli import ArgParser, fail, guarded, out_file, run_script


def parse(argv):
    from ae_jax.tasks.umap_pool import cpu_cores
    cores = cpu_cores()
    p = ArgParser(prog="umap_workers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--fits", type=int, default=5, help="fits per run: the seeds (default 5)")
    p.add_argument("--points", type=int, default=10_000, help="codes per fit (default 10000: the MNIST test set)")
    p.add_argument("--dim", type=int, default=20, help="code size n (default 20)")
    p.add_argument("--workers", type=int_list, default=sorted({1, min(2, cores), min(5, cores), cores}),
                   help=f"comma list of worker counts (default 1, 2, 5 and this machine's {cores} cores, "
                        "as many as are distinct)")
    p.add_argument("--out", type=out_file,
                   default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "umap_workers.json"))
    args = p.parse_args(argv)
    if args.fits < 1 or args.points < 20 or args.dim < 3:
        fail("--fits must be at least 1, --points at least 20 and --dim at least 3 (n <= 2 codes need no UMAP)")
    if min(args.workers) < 1:
        fail(f"--workers must all be at least 1, got {args.workers}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    command, started = command_text(argv), datetime.datetime.now(datetime.timezone.utc)

    def body() -> int:
        import numpy as np
        from ae_jax.tasks import umap_pool

        env = environment(command, started)
        print(f"umap_workers.py  {env['date_utc']}\n  command : {command}\n  cpu     : {env['cpu']}, "
              f"{umap_pool.cpu_cores()} cores usable; load {env['load_average_at_start']}"
              + ("  <- busy: figures will be contended" if busy(env) else ""))
        rng = np.random.default_rng(0)
        codes = [rng.normal(size=(args.points, args.dim)).astype(np.float32) for _ in range(args.fits)]
        seeds = list(range(args.fits))
        result = {"environment": env, "settings": vars(args) | {"out": None}, "rows": []}
        reference = None
        print(f"\n{args.fits} fits of {args.points} x {args.dim} codes\n\n| workers | first s | again s | per fit s |\n"
              "|---|---|---|---|", flush=True)
        for w in args.workers:
            os.environ[umap_pool.ENV_WORKERS] = str(w)
            umap_pool.close_workers()  # fresh processes: "first" pays their compilation
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                embs = umap_pool.embed(codes, seeds, log=lambda s: None)
                times.append(time.perf_counter() - t0)
            same = reference is None or all(np.array_equal(a, b) for a, b in zip(reference, embs))
            reference = reference or embs
            row = {"workers": w, "first_s": times[0], "again_s": times[1], "per_fit_again_s": times[1] / args.fits,
                   "identical_to_first_count": bool(same)}
            result["rows"].append(row)
            print(f"| {w} | {times[0]:.1f} | {times[1]:.1f} | {times[1] / args.fits:.2f} |"
                  + ("" if same else "  <- embeddings differ!"), flush=True)
            write_json(args.out, result)
        print(f"\nwritten: {args.out}")
        return 0 if all(r["identical_to_first_count"] for r in result["rows"]) else 1

    return guarded(body, "the rows measured so far are in the JSON")


if __name__ == "__main__":
    run_script(main)

"""What each run costs when many train in one program: throughput, compile time and memory by run count.

    python benchmarks/run_count.py                                  # 1 ... 64 runs on digits (minutes on a CPU)
    python benchmarks/run_count.py --counts=1,2 --epochs=1          # quick check
    python benchmarks/run_count.py --dataset=mnist --data-dir=DIR --counts=1,8,64,256   # on a GPU

ae_jax trains every run of a call (seeds x betas) in one compiled program, so
a user choosing --seeds and --beta values wants to know how many fit on the
device and what each one costs. For each run count of --counts this script
trains `beta_vae` (n = 20, batch 256, Adam 1e-3) with ae_jax's own trainer on
--dataset for --epochs epochs and reports:

- how the count is formed: betas = gcd(count, --max-betas) values from
  0.25, 0.5, 1, 2, 4, 8, 16, 32 (in that order) and seeds = count / betas, so
  1, 2, 4, 8 runs are 1 seed x 1, 2, 4, 8 betas and 16, 32, 64 runs are 2, 4,
  8 seeds x 8 betas. The compiled program is the same whatever the split
  (betas are traced values, not constants), so the split only mirrors real use.
- seed-samples/s: runs x training images per epoch x epochs / seconds, over
  the steady-state epochs (all but the first when --epochs >= 2; the first
  epoch's first call still pays one-off costs), compilation excluded.
- compile time: the trainer's own (TrainOutput.compile_time_s).
- memory, from XLA's own figures, which every backend gives:
  * the compiled epoch program's memory analysis (ae_jax.trainer.epoch_memory:
    the same program compiled from abstract shapes, for the runs one device
    holds): arguments + outputs + temporaries, outputs that reuse the donated
    train state counted once. On this jax (0.10) and a CPU,
    Compiled.memory_analysis() gives argument, output, alias and temp sizes;
    Device.memory_stats() gives None.
  * where the backend has it (GPU, TPU), the device allocator's
    peak_bytes_in_use after the count's training (a process-wide peak: counts
    run in ascending order, so it is that count's peak at most).
- derived: the bytes each run adds and the bytes all share (the data), from a
  least-squares line through (runs per device, program bytes) over the counts,
  and the largest count that fits this device's memory (memory_stats()
  ["bytes_limit"], or the machine's RAM on a CPU) and each size of --fit-gib:
  devices x floor((limit - shared) / per run), the estimate the trainer's
  out-of-memory error names (ae_jax.trainer.memory).

A table is printed as the counts go, and the JSON (default
benchmarks/run_count.json, beside this script) is rewritten after each count,
so an interrupted sweep keeps what it measured ("complete": false). A count
that runs out of device memory ends the sweep; its one-line error (the count
that would fit) is recorded under "out_of_memory".

The memory figure is a second compilation of the same program, made after the
count's training so that the timed compilation is never served from a
persistent compilation cache (JAX_COMPILATION_CACHE_DIR) that this one filled.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os


from common import (busy, command_text, environment, float_list, int_list, train_timed,
                    write_json)
from ae_jax.cli import ArgParser, add_data_dir_arg, check_dataset, fail, guarded, out_file, run_script

MODEL = "beta_vae"
LATENT = 20
BATCH = 256
LR = 1e-3
BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
DEFAULT_COUNTS = [1, 2, 4, 8, 16, 32, 64]
DEFAULT_FIT_GIB = [8.0, 16.0, 80.0]  # a TPU v2 core, a T4 or V100, an H100
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_count.json")


def parse(argv=None):
    p = ArgParser(prog="run_count.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int_list, default=DEFAULT_COUNTS,
                   help="run counts (seeds x betas) to measure, comma list (default 1,2,4,8,16,32,64)")
    p.add_argument("--max-betas", type=int, default=8,
                   help=f"betas per count at most: gcd(count, this) of them (default 8, at most {len(BETAS)})")
    p.add_argument("--dataset", default="digits", help="dataset to train on (default digits, bundled)")
    add_data_dir_arg(p)
    p.add_argument("--epochs", type=int, default=5, help="epochs per count (default 5; the first is not timed)")
    p.add_argument("--fit-gib", type=float_list, default=DEFAULT_FIT_GIB,
                   help="device memory sizes (GiB) to say the largest count for (default 8,16,80)")
    p.add_argument("--out", type=out_file, default=DEFAULT_OUT,
                   help="JSON output path (default: run_count.json beside this script)")
    p.add_argument("--verbose", action="store_true", help="print the trainer's per-epoch log")
    args = p.parse_args(argv)
    bad = [c for c in args.counts if c < 1]
    if bad:
        fail(f"--counts: every run count must be at least 1, got {bad[0]}")
    if len(set(args.counts)) != len(args.counts):
        fail(f"--counts has a repeated count: {','.join(map(str, args.counts))}")
    if args.epochs < 1:
        fail(f"--epochs must be at least 1, got {args.epochs}")
    if not 1 <= args.max_betas <= len(BETAS):
        fail(f"--max-betas must be between 1 and {len(BETAS)}, got {args.max_betas}")
    bad = [g for g in args.fit_gib if not 0 < g < float("inf")]
    if bad:
        fail(f"--fit-gib: every size must be a finite number of GiB > 0, got {bad[0]:g}")
    check_dataset(args.dataset)
    args.counts = sorted(args.counts)
    return args


def seeds_x_betas(count: int, max_betas: int) -> tuple[int, tuple[float, ...]]:
    """(seeds, betas) with seeds x len(betas) = count: gcd(count, max_betas) betas."""
    n_betas = math.gcd(count, max_betas)
    return count // n_betas, BETAS[:n_betas]


def steady_rate(count: int, samples_per_epoch: int, epoch_times: list[float]) -> tuple[float, int]:
    """(seed-samples/s, epochs timed): all epochs but the first when there are two or more."""
    steady = epoch_times[1:] if len(epoch_times) >= 2 else epoch_times
    return count * samples_per_epoch * len(steady) / sum(steady), len(steady)


def mib(n) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.1f}"


def measure(count: int, args, train, val) -> dict:
    import jax
    from ae_jax.models import get_model
    from ae_jax.trainer import RunAxis, TrainConfig, epoch_memory, spec_hparams
    from ae_jax.trainer.memory import device_peak_bytes, runs_per_device

    spec = get_model(MODEL)
    n_seeds, betas = seeds_x_betas(count, args.max_betas)
    devices = len(RunAxis(count).devices)
    per_dev = runs_per_device(count, devices)
    runs = [(s, b) for b in betas for s in range(n_seeds)]  # the trainer's order: seed-major within each beta
    t = train_timed(MODEL, LATENT, BATCH, args.epochs, [s for s, _ in runs],
                    [spec_hparams(spec, b, LR) for _, b in runs], train, val, args.verbose)
    # measured after training, so a persistent compilation cache can serve this compile and never the timed one
    mem = epoch_memory(spec, TrainConfig(latent_dim=LATENT, epochs=args.epochs, batch_size=BATCH), per_dev,
                       train, val)
    rate, timed = steady_rate(count, t["samples_per_epoch_per_seed"], t["epoch_time_s"])
    t["device"] = t.pop("devices")  # {"platform", "kind", "count"} as metrics.json records it
    row = {"runs": count, "seeds": n_seeds, "betas": list(betas), "devices": devices, "runs_per_device": per_dev,
           "seed_samples_per_s": rate, "epochs_timed": timed, **t,
           "program_memory": None if mem is None else {
               "argument_bytes": mem.argument, "output_bytes": mem.output, "alias_bytes": mem.alias,
               "temp_bytes": mem.temp, "total_bytes": mem.total},
           "program_bytes_per_run": None if mem is None else mem.total / per_dev,
           "device_peak_bytes": device_peak_bytes(jax.devices()[0])}
    return row


def derive(rows: list[dict], fit_gib: list[float]) -> dict:
    """The cost per run and the shared bytes (a line through the counts), and the largest count per memory size.

    The shared bytes are the line's intercept, taken as 0 where it is
    negative (the cost per run grows a little with the count, which tilts the
    line); "intercept_bytes" keeps the raw value.
    """
    import jax
    import numpy as np
    from ae_jax.trainer.memory import GIB, device_memory_limit, fit_per_run, largest_run_count

    pts = [(r["runs_per_device"], r["program_memory"]["total_bytes"]) for r in rows if r["program_memory"]]
    if len({p for p, _ in pts}) < 2:
        return {"fit": None, "fits": [], "note": "two different run counts per device with memory figures needed"}
    shared, per_run = fit_per_run([p for p, _ in pts], [b for _, b in pts])
    dev = jax.devices()[0]
    limit = device_memory_limit(dev)
    source = "memory_stats()['bytes_limit']" if (dev.memory_stats() or {}).get("bytes_limit") else "host RAM"
    n_dev = rows[-1]["devices"]
    fits = []
    if limit is not None:
        fits.append({"memory": f"this machine: {n_dev} x {dev.platform} ({dev.device_kind}), {source}",
                     "limit_bytes": limit, "devices": n_dev,
                     "largest_runs": largest_run_count(shared, per_run, limit, n_dev)})
    for g in fit_gib:
        fits.append({"memory": f"one device of {g:g} GiB", "limit_bytes": int(g * GIB), "devices": 1,
                     "largest_runs": largest_run_count(shared, per_run, g * GIB, 1)})
    intercept = float(np.polyfit([p for p, _ in pts], [b for _, b in pts], 1)[1])
    return {"fit": {"shared_bytes": shared, "bytes_per_run": per_run, "intercept_bytes": intercept, "points": pts,
                    "method": "least-squares line through (runs per device, program bytes)"},
            "fits": fits,
            "note": f"from the {dev.platform} backend's compiled program; another backend fuses and buffers "
                    "differently, so measure there before relying on a count near the limit"}


def main(argv=None) -> int:
    args = parse(argv)
    command = command_text(argv)
    started = datetime.datetime.now(datetime.timezone.utc)

    def body() -> int:
        import jax
        from ae_jax.data import load_splits, train_data, val_data
        from ae_jax.trainer import OutOfMemory

        splits = load_splits(args.dataset, "full", args.data_dir)
        train, val = train_data(splits), val_data(splits)
        env = environment(command, started)
        env["compilation_cache_dir"] = jax.config.jax_compilation_cache_dir or None
        print(f"run_count.py  {env['date_utc']}")
        print(f"  command : {command}")
        print(f"  devices : {', '.join(env['jax_devices'])} ({env['device_kind']}; {env['cpu']}, "
              f"{env['cpu_count']} CPUs)")
        print(f"  versions: jax {env['jax_version']}, python {env['python']}")
        if env["compilation_cache_dir"]:
            print(f"  NOTE    : a persistent compilation cache is on ({env['compilation_cache_dir']}); a program "
                  "compiled before loads from it, and its compile time is then the load's")
        if env["load_average_at_start"]:
            la = env["load_average_at_start"]
            note = "  <- the machine is busy; figures will be contended" if busy(env) else ""
            print(f"  load    : {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}{note}")
        print(f"  workload: {MODEL} n={LATENT}, batch {BATCH}, {args.epochs} epoch(s) on {args.dataset} "
              f"({train.x.shape[0]} train / {val.x.shape[0]} val images); runs = seeds x betas, "
              f"betas = gcd(runs, {args.max_betas})", flush=True)
        result = {
            "environment": env,
            "settings": {"model": MODEL, "latent_dim": LATENT, "batch_size": BATCH, "lr": LR, "epochs": args.epochs,
                         "dataset": args.dataset, "n_train": int(train.x.shape[0]), "n_val": int(val.x.shape[0]),
                         "data_bytes": int(train.x.nbytes + val.x.nbytes),
                         "counts": args.counts, "max_betas": args.max_betas, "betas": list(BETAS),
                         "counts_formed": "betas = the first gcd(runs, max_betas) of 'betas', seeds = runs / betas",
                         "throughput": "seed-samples/s over the epochs after the first (all when --epochs = 1), "
                                       "compilation excluded",
                         "memory": "XLA's memory analysis of the compiled epoch program for the runs one device "
                                   "holds: argument + output - alias (the donated state) + temp bytes"},
            "rows": [], "complete": False, "contended": busy(env),
        }
        head = (f"{'runs':>5}  {'seeds x betas':>13}  {'seed-samples/s':>14}  {'s/epoch':>8}  {'compile s':>9}  "
                f"{'program MiB':>11}  {'MiB/run':>8}  {'device peak MiB':>15}")
        print("\n" + head + "\n" + "-" * len(head), flush=True)
        for count in args.counts:
            try:
                r = measure(count, args, train, val)
            except OutOfMemory as e:  # the larger counts would not fit either
                result["out_of_memory"] = {"runs": count, "message": str(e)}
                print(f"{count:>5}  out of memory: {e}", flush=True)
                break
            result["rows"].append(r)
            write_json(args.out, result)
            per_epoch = sum(r["epoch_time_s"][-r["epochs_timed"]:]) / r["epochs_timed"]
            total = r["program_memory"]["total_bytes"] if r["program_memory"] else None
            split = f"{r['seeds']} x {len(r['betas'])}"
            print(f"{count:>5}  {split:>13}  {r['seed_samples_per_s']:>14,.0f}  "
                  f"{per_epoch:>8.2f}  {r['compile_time_s']:>9.1f}  {mib(total):>11}  "
                  f"{mib(r['program_bytes_per_run']):>8}  {mib(r['device_peak_bytes']):>15}", flush=True)
        result.update(derive(result["rows"], args.fit_gib))
        if result["fit"]:
            f = result["fit"]
            print(f"\neach run adds {mib(f['bytes_per_run'])} MiB to the program; shared by all: "
                  f"{mib(f['shared_bytes'])} MiB (the line's intercept, {mib(f['intercept_bytes'])} MiB, at least 0; "
                  f"the images alone are {mib(result['settings']['data_bytes'])} MiB); largest run count that fits:")
            for x in result["fits"]:
                print(f"  {x['memory']}, {x['limit_bytes'] / 2 ** 30:.1f} GiB: {x['largest_runs']:,} runs")
            print(f"({result['note']})")
        if result["contended"]:
            print(f"NOTE: the load average was {env['load_average_at_start'][0]:.2f} on {env['cpu_count']} CPUs "
                  "at the start: another job was running, so the throughput is a lower bound")
        result["complete"] = True
        result["elapsed_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        write_json(args.out, result)
        print(f"\nwritten to {args.out}")
        return 0

    # compilation is one of the figures: ae_jax's own cache stays off (JAX's own setting is noted when on)
    return guarded(body, f"the counts measured so far are in {args.out}", compilation_cache=False)


if __name__ == "__main__":
    run_script(main)

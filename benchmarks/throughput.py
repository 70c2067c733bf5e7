"""Training throughput of ae_jax against the machine's matmul peak and a plain PyTorch loop.

    python benchmarks/throughput.py                                   # full run (minutes)
    python benchmarks/throughput.py --n-train=5120 --epochs=1 --seeds-list=1,2   # quick check

One run does all of this and writes JSON (default benchmarks/throughput.json):

1. Matmul peak: the best GFLOP/s of a jitted float32 matmul, timed with
   block_until_ready, best of --repeats after a warm-up: square sizes
   --peak-sizes (default 1024,2048,4096) and the model's own largest layer
   shape (256 x 1024 @ 1024 x 341). The peak is the best of all of them, so a
   shape that happens to run faster than the squares never flatters the
   trainer's "% of peak". The matmuls run at the trainer's precision, full
   float32 (JAX's default is TF32 on recent NVIDIA GPUs and bfloat16 passes
   on TPUs, faster than anything the trainer does by default). PyTorch's
   square-matmul rates are recorded beside them for information.
2. ae_jax: the `vanilla` model (n = 20: 1024-341-113-20 / 20-113-341-1024 with
   BatchNorm, batch 256, Adam 1e-3, validation loss each epoch) trained by
   ae_jax.trainer.train_runs on MNIST-shaped random data (uniform [0, 1],
   --n-train x 32 x 32, validation --n-val) for --epochs epochs at each seed
   count of --seeds-list, all seeds in one compiled program. Seed-samples/s =
   seeds x samples_per_epoch x epochs / sum(epoch_time): every epoch counts,
   compilation is timed separately (TrainOutput.compile_time_s).
3. PyTorch reference (optional): the same architecture as a torch.nn.Sequential
   in eager mode, trained one seed after another (the usual way): BCE summed
   over pixels and averaged over the batch, Adam 1e-3, batch 256, reshuffled
   every epoch (the last incomplete batch dropped, as ae_jax does), the same
   validation pass per epoch. Every seed count is timed for real unless
   --torch-extrapolate, which times one seed and multiplies.
4. FLOPs, counted analytically for the six dense layers (in -> out):
       forward  = 2 * sum(in * out)                      per sample
       training = 3 * forward                            per sample (the usual
                  "backward = 2 x forward" rule: grad w.r.t. inputs and weights)
   For n = 20: sum(in*out) = 779,954, forward = 1.560 MFLOP, training = 4.680
   MFLOP per sample. The exact matmul count is lower (3.981 MFLOP) because no
   gradient w.r.t. the input image is needed; both are written to the JSON, and
   XLA's cost analysis of one compiled training step is reported beside them
   (it also counts elementwise work). The validation forward pass (about 3% of
   an epoch's FLOPs at the default sizes) is in the timed epoch but not in the
   FLOP count, so the achieved GFLOP/s is slightly conservative.
       achieved GFLOP/s = seed-samples/s * training FLOPs per sample / 1e9
       % of peak        = achieved GFLOP/s / matmul peak GFLOP/s

5. The floor of a step: at each seed count, every matmul of one training step
   (forward, weight and input gradients, batched over seeds as the trainer
   runs them) and one Adam update of the batched parameters are timed on their
   own (`step_floor`). Their sum bounds the trainer's seed-samples/s even if
   BatchNorm, ReLU, the loss and the batch gather cost nothing; the table's
   "bound %" is the % of peak at that bound, i.e. the most this model could
   show on this machine, and the JSON has the trainer's % of the bound.

The targets (printed as PASS/FAIL, not asserted): at 5 seeds, at least 1.5x
PyTorch's seed-samples/s and at least 75% of the measured matmul peak; compile
time under 15 s per model at every seed count.
"""
from __future__ import annotations

import argparse
import datetime
import os
import time


from common import busy, command_text, environment, int_list, train_timed, write_json
from ae_jax.cli import ArgParser, fail, guarded, out_file, run_script

MODEL = "vanilla"
LATENT = 20
BATCH = 256
LR = 1e-3
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.json")
TORCH_HINT = "PyTorch not installed: pip install torch==2.13.0 (CPU build) to compare; skipping the reference"
TARGET_RATIO = 1.5
TARGET_PEAK_PCT = 75.0
TARGET_COMPILE_S = 15.0
TARGET_SEEDS = 5


# ----------------------------------------------------------------------------- command line

def parse(argv=None):
    p = ArgParser(prog="throughput.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="training epochs per measurement (default 2)")
    p.add_argument("--n-train", type=int, default=55000, help="random training images (default 55000, as MNIST)")
    p.add_argument("--n-val", type=int, default=5000, help="random validation images (default 5000, as MNIST)")
    p.add_argument("--seeds-list", type=int_list, default=[1, 2, 5, 10],
                   help="seed counts to measure, comma list (default 1,2,5,10)")
    p.add_argument("--out", type=out_file, default=DEFAULT_OUT,
                   help="JSON output path (default: throughput.json beside this script)")
    p.add_argument("--skip-torch", action="store_true", help="do not run the PyTorch reference")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads for the reference (default: os.cpu_count())")
    p.add_argument("--torch-extrapolate", action="store_true",
                   help="time PyTorch for 1 seed only and multiply (it runs seeds one after another)")
    p.add_argument("--peak-sizes", type=int_list, default=[1024, 2048, 4096],
                   help="square matmul sizes for the peak (default 1024,2048,4096)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per matmul size (default 10)")
    p.add_argument("--verbose", action="store_true", help="print the trainer's per-epoch log")
    args = p.parse_args(argv)
    if args.epochs < 1:
        fail(f"--epochs must be at least 1, got {args.epochs}")
    if args.n_train < BATCH:
        fail(f"--n-train must be at least one batch ({BATCH}), got {args.n_train}")
    if args.n_val < 1:
        fail(f"--n-val must be at least 1, got {args.n_val}")
    bad = [s for s in args.seeds_list if s < 1]
    if bad:
        fail(f"--seeds-list: every seed count must be at least 1, got {bad[0]}")
    if len(set(args.seeds_list)) != len(args.seeds_list):
        fail(f"--seeds-list has a repeated count: {','.join(map(str, args.seeds_list))}")
    bad = [s for s in args.peak_sizes if s < 1]
    if bad:
        fail(f"--peak-sizes: every size must be at least 1, got {bad[0]}")
    if args.torch_threads is not None and args.torch_threads < 1:
        fail(f"--torch-threads must be at least 1, got {args.torch_threads}")
    if args.repeats < 1:
        fail(f"--repeats must be at least 1, got {args.repeats}")
    return args


# ----------------------------------------------------------------------------- FLOPs

def layer_dims(latent: int = LATENT) -> list[tuple[int, int]]:
    """(in, out) of the six dense layers of the plain deep autoencoder, from ae_jax's own size rule."""
    from ae_jax.models import D_PIXELS, decoder_units, encoder_units
    enc = (D_PIXELS,) + encoder_units(latent)
    dec = (latent,) + decoder_units(latent)
    return list(zip(enc[:-1], enc[1:])) + list(zip(dec[:-1], dec[1:]))


def flop_counts(latent: int = LATENT) -> dict:
    dims = layer_dims(latent)
    macs = sum(i * o for i, o in dims)
    fwd = 2 * macs
    first_in, first_out = dims[0]
    return {
        "layers": [f"{i}->{o}" for i, o in dims],
        "sum_in_times_out": macs,
        "forward_per_sample": fwd,
        "train_per_sample": 3 * fwd,
        "train_per_sample_exact_matmul": 3 * fwd - 2 * first_in * first_out,
        "formula": "forward = 2*sum(in*out) over the 6 dense layers; training = 3*forward "
                   "(exact matmul count: 3*forward - 2*1024*341, no gradient w.r.t. the input); "
                   "achieved GFLOP/s = seed-samples/s * training FLOPs per sample / 1e9; "
                   "the per-epoch validation forward pass is timed but not counted",
    }


def xla_step_flops() -> float | None:
    """XLA's cost analysis of ONE compiled training step (forward, backward, Adam), per sample.

    The epoch program is a lax.scan, whose body XLA's cost analysis counts once
    whatever the trip count, so the step is compiled on its own here. It
    mirrors ae_jax.trainer.program.make_epoch's step (a cross-check, not the timed code).
    """
    import jax
    import jax.numpy as jnp
    from ae_jax.data import Data
    from ae_jax.models import get_model
    from ae_jax.trainer.program import OPTIMIZER, FULL, TrainConfig, init_state, make_loss, run_keys, spec_hparams

    spec = get_model(MODEL)
    cfg = TrainConfig(latent_dim=LATENT, epochs=1, batch_size=BATCH)
    loss_fn = make_loss(spec, cfg, FULL)
    hp = jax.tree.map(jnp.asarray, spec_hparams(spec, lr=LR))

    def step(st, batch, key):
        (loss, (bstats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params, st.batch_stats, batch, key,
                                                                                hp)
        updates, opt_state = OPTIMIZER.update(grads, st.opt_state)
        params = jax.tree.map(lambda p, u: p - hp.lr * u, st.params, updates)
        return st._replace(params=params, batch_stats=bstats, opt_state=opt_state), loss

    st = init_state(spec, cfg, run_keys(0)["init"])
    batch = Data(jnp.zeros((BATCH, 32, 32), jnp.float32), jnp.zeros((BATCH,), jnp.int32))
    compiled = jax.jit(step).lower(st, batch, run_keys(0)["train"]).compile()  # a broken step fails here, loudly
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, (list, tuple)):
            ca = ca[0]
        return float(ca["flops"]) / BATCH
    except (AttributeError, IndexError, KeyError, NotImplementedError, TypeError):  # this jax counts no flops
        return None


# ----------------------------------------------------------------------------- matmul peak

def _best_rate(fn, args, flops: float, repeats: int) -> float:
    return flops / _best_time(lambda: fn(*args), repeats) / 1e9


def jax_matmul_peak(sizes, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    mm = jax.jit(lambda a, b: a @ b)
    rates = {}
    for n in sizes:
        ka, kb = jax.random.split(jax.random.key(n))
        a = jax.random.uniform(ka, (n, n), jnp.float32)
        b = jax.random.uniform(kb, (n, n), jnp.float32)
        rates[str(n)] = _best_rate(mm, (a, b), 2.0 * n**3, repeats)
    # The model's own largest layer, forward: [256, 1024] @ [1024, 341].
    i, o = layer_dims()[0]
    a = jax.random.uniform(jax.random.key(1), (BATCH, i), jnp.float32)
    w = jax.random.uniform(jax.random.key(2), (i, o), jnp.float32)
    layer_rate = _best_rate(mm, (a, w), 2.0 * BATCH * i * o, max(repeats, 20))
    best = max(rates, key=rates.get)
    square = rates[best]
    # The peak is the best rate measured, square or the layer shape (never flatter the trainer).
    peak, at = (square, f"{best}x{best}") if square >= layer_rate else (layer_rate, f"[{BATCH},{i}]@[{i},{o}]")
    return {"gflops_by_size": rates, "square_peak_gflops": square, "square_peak_size": int(best),
            "layer_shape": f"[{BATCH},{i}]@[{i},{o}]", "layer_shape_gflops": layer_rate,
            "peak_gflops": peak, "peak_at": at}


def torch_matmul_peak(torch, sizes, repeats: int) -> dict:
    rates = {}
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        rates[str(n)] = 2.0 * n**3 / best / 1e9
    return {"gflops_by_size": rates, "peak_gflops": max(rates.values())}


# ----------------------------------------------------------------------------- what a step must cost

def step_floor(seeds: int, repeats: int) -> dict:
    """Time, in isolation, the two parts of a training step no trainer can skip, at `seeds` seeds.

    matmuls: every matmul of one step, shaped as the vmapped trainer runs them
      ([seeds, ...] batched): forward x @ W for the six layers, the weight
      gradients x^T @ g, and the input gradients g @ W^T for all but the first
      layer. Run one after another in one jitted program, as an epoch would.
    adam: one Adam update (optax.scale_by_adam, then p - lr * u) of the batched
      parameters, gradients and moments of the real model; it streams about
      7 x 4 bytes per parameter through memory, so it is bound by bandwidth,
      not FLOPs.
    Their sum is a floor for a step's time (BatchNorm, ReLU, the loss and the
    batch gather come on top), so seeds * batch / floor bounds the trainer's
    seed-samples/s, and the % of peak that bound reaches is the most this model
    can show on this machine.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from ae_jax.models import get_model
    from ae_jax.trainer.program import TrainConfig, init_state, run_keys

    dims = layer_dims()
    keys = iter(jax.random.split(jax.random.key(0), 4 * len(dims)))
    u = lambda shape: jax.random.uniform(next(keys), (seeds,) + shape, jnp.float32)  # noqa: E731
    xs = [u((BATCH, i)) for i, _ in dims]
    gs = [u((BATCH, o)) for _, o in dims]
    ws = [u((i, o)) for i, o in dims]

    @jax.jit
    def matmuls(xs, gs, ws):
        out = []
        for k, (x, g, w) in enumerate(zip(xs, gs, ws)):
            out.append(jnp.einsum("sbi,sio->sbo", x, w))        # forward
            out.append(jnp.einsum("sbi,sbo->sio", x, g))        # weight gradient
            if k > 0:
                out.append(jnp.einsum("sbo,sio->sbi", g, w))    # input gradient (none for the image)
        return out

    mm_flops = 2.0 * seeds * BATCH * sum(i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(dims))
    t_mm = _best_time(lambda: matmuls(xs, gs, ws), max(repeats, 20))

    spec = get_model(MODEL)
    cfg = TrainConfig(latent_dim=LATENT, epochs=1, batch_size=BATCH)
    params = jax.jit(jax.vmap(lambda k: init_state(spec, cfg, k).params))(
        jnp.stack([run_keys(s)["init"] for s in range(seeds)]))
    opt = optax.scale_by_adam()
    opt_state = jax.vmap(opt.init)(params)
    grads = jax.tree.map(lambda p: p * 1e-3, params)
    n_params = sum(int(p.size) for p in jax.tree.leaves(params))

    @jax.jit
    def adam(params, grads, opt_state):
        upd, opt_state = jax.vmap(opt.update)(grads, opt_state)
        return jax.tree.map(lambda p, d: p - LR * d, params, upd), opt_state

    t_adam = _best_time(lambda: adam(params, grads, opt_state), max(repeats, 20))
    floor = t_mm + t_adam
    return {"seeds": seeds, "matmul_s": t_mm, "matmul_gflops": mm_flops / t_mm / 1e9, "adam_s": t_adam,
            "adam_gbytes_per_s": 7 * 4 * n_params / t_adam / 1e9, "parameters": n_params,
            "floor_step_s": floor, "bound_seed_samples_per_s": seeds * BATCH / floor}


def _best_time(call, repeats: int) -> float:
    """Best wall-clock of `repeats` calls after two warm-ups (the first compiles), waiting for every result."""
    jax_block(call())
    jax_block(call())
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax_block(call())
        best = min(best, time.perf_counter() - t0)
    return best


def jax_block(tree):
    import jax
    return jax.block_until_ready(tree)


# ----------------------------------------------------------------------------- ae_jax

def bench_jax(seeds: int, epochs: int, x_train, x_val, verbose: bool) -> dict:
    import numpy as np
    from ae_jax.data import Data
    from ae_jax.models import get_model
    from ae_jax.trainer import spec_hparams

    hps = [spec_hparams(get_model(MODEL), lr=LR)] * seeds
    labels = lambda x: np.zeros(x.shape[0], np.int32)  # noqa: E731 - the vanilla model ignores labels
    t = train_timed(MODEL, LATENT, BATCH, epochs, range(seeds), hps, Data(x_train, labels(x_train)),
                    Data(x_val, labels(x_val)), verbose)
    total = sum(t["epoch_time_s"])
    samples = seeds * t["samples_per_epoch_per_seed"] * epochs
    del t["devices"]
    return {"seeds": seeds, "seed_samples_per_s": samples / total, "train_time_s": total, **t}


# ----------------------------------------------------------------------------- PyTorch

def torch_model(torch):
    nn = torch.nn
    dims = layer_dims()
    layers = []
    for k, (i, o) in enumerate(dims):
        last_of_half = k in (2, 5)
        layers.append(nn.Linear(i, o, bias=last_of_half))
        if not last_of_half:
            layers += [nn.BatchNorm1d(o), nn.ReLU()]
    layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def torch_train_one(torch, seed: int, epochs: int, x_train, x_val) -> dict:
    """One seed, the usual eager loop; returns per-epoch seconds and the samples seen."""
    F = torch.nn.functional
    torch.manual_seed(seed)
    model = torch_model(torch)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    n = x_train.shape[0]
    steps = n // BATCH
    times, last_train, last_val = [], float("nan"), float("nan")
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=g)
        total = torch.zeros(())
        for s in range(steps):
            xb = x_train[perm[s * BATCH:(s + 1) * BATCH]]
            loss = F.binary_cross_entropy(model(xb), xb, reduction="sum") / BATCH
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        model.eval()
        with torch.no_grad():
            val = sum(F.binary_cross_entropy(model(c), c, reduction="sum") for c in torch.split(x_val, 1000))
        last_train, last_val = float(total) / steps, float(val) / x_val.shape[0]
        times.append(time.perf_counter() - t0)
    return {"epoch_time_s": times, "samples": steps * BATCH * epochs,
            "final_train_loss": last_train, "final_val_loss": last_val}


def bench_torch(torch, seeds: int, epochs: int, x_train, x_val, one_seed: dict | None) -> dict:
    if one_seed is not None:  # --torch-extrapolate: seeds run one after another, so time scales with seeds
        total = sum(one_seed["epoch_time_s"]) * seeds
        return {"seeds": seeds, "seed_samples_per_s": one_seed["samples"] * seeds / total,
                "train_time_s": total, "extrapolated_from_1_seed": True}
    runs = [torch_train_one(torch, s, epochs, x_train, x_val) for s in range(seeds)]
    total = sum(sum(r["epoch_time_s"]) for r in runs)
    return {"seeds": seeds, "seed_samples_per_s": sum(r["samples"] for r in runs) / total,
            "train_time_s": total, "extrapolated_from_1_seed": False,
            "final_train_loss_mean": sum(r["final_train_loss"] for r in runs) / seeds,
            "final_val_loss_mean": sum(r["final_val_loss"] for r in runs) / seeds}


# ----------------------------------------------------------------------------- report

def fmt(v, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def targets(rows: list[dict], torch_ok: bool) -> list[dict]:
    res = []
    at = next((r for r in rows if r["seeds"] == TARGET_SEEDS), None)
    if at is None:
        res.append({"target": f"at {TARGET_SEEDS} seeds: >= {TARGET_RATIO}x PyTorch seed-samples/s", "status": "NOT MEASURED",
                    "detail": f"{TARGET_SEEDS} is not in --seeds-list"})
        res.append({"target": f"at {TARGET_SEEDS} seeds: >= {TARGET_PEAK_PCT:.0f}% of the matmul peak",
                    "status": "NOT MEASURED", "detail": f"{TARGET_SEEDS} is not in --seeds-list"})
    else:
        if torch_ok:
            ok = at["ratio"] >= TARGET_RATIO
            res.append({"target": f"at {TARGET_SEEDS} seeds: >= {TARGET_RATIO}x PyTorch seed-samples/s",
                        "status": "PASS" if ok else "FAIL", "detail": f"{at['ratio']:.2f}x"})
        else:
            res.append({"target": f"at {TARGET_SEEDS} seeds: >= {TARGET_RATIO}x PyTorch seed-samples/s",
                        "status": "NOT MEASURED", "detail": "no PyTorch reference"})
        ok = at["pct_of_peak"] >= TARGET_PEAK_PCT
        res.append({"target": f"at {TARGET_SEEDS} seeds: >= {TARGET_PEAK_PCT:.0f}% of the matmul peak",
                    "status": "PASS" if ok else "FAIL",
                    "detail": f"{at['pct_of_peak']:.1f}% (the step's matmuls + Adam alone bound it at "
                              f"{at['bound_pct_of_peak']:.1f}%; the trainer reaches {at['pct_of_bound']:.0f}% of "
                              "that bound)"})
    worst = max(rows, key=lambda r: r["compile_time_s"])
    ok = worst["compile_time_s"] < TARGET_COMPILE_S
    res.append({"target": f"compile time < {TARGET_COMPILE_S:.0f} s per model (every seed count)",
                "status": "PASS" if ok else "FAIL",
                "detail": f"worst {worst['compile_time_s']:.1f} s at {worst['seeds']} seed(s)"})
    return res


def main(argv=None) -> int:
    args = parse(argv)
    return guarded(lambda: measure(args, argv), f"nothing is written to {args.out} until every measurement is done",
                   compilation_cache=False)


def measure(args, argv) -> int:
    command = command_text(argv)
    started = datetime.datetime.now(datetime.timezone.utc)

    import jax
    import numpy as np

    from ae_jax.trainer.program import PRECISIONS
    torch = None
    torch_skip_reason = None
    if args.skip_torch:
        torch_skip_reason = "skipped (--skip-torch)"
    else:
        try:
            import torch  # noqa: F811
            torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
        except ImportError:
            print(TORCH_HINT, flush=True)
            torch_skip_reason = "PyTorch not installed"
            torch = None

    env = environment(command, started)
    env["torch_version"] = torch.__version__ if torch is not None else None
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    devices = env["jax_devices"]
    print(f"throughput.py  {env['date_utc']}")
    print(f"  command : {command}")
    print(f"  devices : {', '.join(devices)} ({env['cpu']}, {env['cpu_count']} CPUs)")
    print(f"  versions: jax {env['jax_version']}, torch {env['torch_version'] or '-'}, python {env['python']}")
    if env["load_average_at_start"]:
        la = env["load_average_at_start"]
        note = "  <- the machine is busy; figures will be contended" if la[0] > 0.5 * (os.cpu_count() or 1) else ""
        print(f"  load    : {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}{note}")
    print(f"  workload: {MODEL} n={LATENT} ({'-'.join(str(i) for i, _ in layer_dims()[:3])}-{LATENT} / "
          f"{'-'.join(str(o) for _, o in layer_dims()[2:])}), batch {BATCH}, {args.epochs} epoch(s), "
          f"{args.n_train} train + {args.n_val} val random 32x32 images", flush=True)

    # 1. matmul peak, at the precision the trainer runs with (full float32 unless --precision=fast): JAX's
    # default is lower on a GPU (TF32) or a TPU, which would set the peak several times above what the
    # trainer's matmuls can reach there (one H200: 265 TFLOP/s at 4096 x 4096 by default)
    print("\nmeasuring the float32 matmul peak ...", flush=True)
    with jax.default_matmul_precision(PRECISIONS["float32"]):
        peak = jax_matmul_peak(args.peak_sizes, args.repeats)
    for n, r in peak["gflops_by_size"].items():
        print(f"  jax  {n:>5} x {n:<5} {r:8.1f} GFLOP/s")
    print(f"  jax  {peak['layer_shape']:>13} {peak['layer_shape_gflops']:8.1f} GFLOP/s  (the model's largest layer)")
    tpeak = None
    if torch is not None:
        tpeak = torch_matmul_peak(torch, args.peak_sizes, args.repeats)
        for n, r in tpeak["gflops_by_size"].items():
            print(f"  torch {n:>4} x {n:<5} {r:8.1f} GFLOP/s")
    peak_gf = peak["peak_gflops"]
    print(f"  peak (jax, best of the above): {peak_gf:.1f} GFLOP/s at {peak['peak_at']}", flush=True)

    # FLOPs
    flops = flop_counts()
    flops["xla_cost_analysis_step_per_sample"] = xla_step_flops()
    fps = flops["train_per_sample"]
    print(f"\nFLOPs per training sample: {fps / 1e6:.3f} M (3 x forward {flops['forward_per_sample'] / 1e6:.3f} M; "
          f"exact matmul {flops['train_per_sample_exact_matmul'] / 1e6:.3f} M; XLA cost analysis "
          f"{fmt(flops['xla_cost_analysis_step_per_sample'] and flops['xla_cost_analysis_step_per_sample'] / 1e6, '.3f')} M)")

    # data
    rng = np.random.default_rng(0)
    x_train = rng.random((args.n_train, 32, 32), dtype=np.float32)
    x_val = rng.random((args.n_val, 32, 32), dtype=np.float32)

    # 2. ae_jax
    jax_rows = []
    for s in args.seeds_list:
        print(f"\nae_jax: {s} seed(s) x {args.epochs} epoch(s) ...", flush=True)
        r = bench_jax(s, args.epochs, x_train, x_val, args.verbose)
        r["gflops"] = r["seed_samples_per_s"] * fps / 1e9
        r["pct_of_peak"] = 100.0 * r["gflops"] / peak_gf
        with jax.default_matmul_precision(PRECISIONS["float32"]):
            fl = step_floor(s, args.repeats)
        fl["bound_pct_of_peak"] = 100.0 * fl["bound_seed_samples_per_s"] * fps / 1e9 / peak_gf
        r["floor"] = fl
        r["pct_of_bound"] = 100.0 * r["seed_samples_per_s"] / fl["bound_seed_samples_per_s"]
        jax_rows.append(r)
        print(f"  {r['seed_samples_per_s']:,.0f} seed-samples/s, compile {r['compile_time_s']:.1f} s, "
              f"epochs {', '.join(f'{t:.1f}' for t in r['epoch_time_s'])} s, "
              f"{r['gflops']:.1f} GFLOP/s ({r['pct_of_peak']:.1f}% of peak)", flush=True)
        print(f"  floor of a step alone: matmuls {fl['matmul_s'] * 1e3:.2f} ms ({fl['matmul_gflops']:.0f} GFLOP/s) + "
              f"Adam {fl['adam_s'] * 1e3:.2f} ms ({fl['adam_gbytes_per_s']:.0f} GB/s) -> at most "
              f"{fl['bound_seed_samples_per_s']:,.0f} seed-samples/s = {fl['bound_pct_of_peak']:.1f}% of peak; "
              f"the trainer reaches {r['pct_of_bound']:.0f}% of that bound", flush=True)

    # 3. PyTorch
    torch_rows: dict[int, dict] = {}
    if torch is not None:
        xt = torch.from_numpy(x_train.reshape(args.n_train, -1))
        xv = torch.from_numpy(x_val.reshape(args.n_val, -1))
        one = None
        if args.torch_extrapolate:
            print(f"\nPyTorch: 1 seed x {args.epochs} epoch(s), extrapolated to each seed count ...", flush=True)
            one = torch_train_one(torch, 0, args.epochs, xt, xv)
        for s in args.seeds_list:
            if one is None:
                print(f"\nPyTorch: {s} seed(s) one after another x {args.epochs} epoch(s) ...", flush=True)
            r = bench_torch(torch, s, args.epochs, xt, xv, one)
            torch_rows[s] = r
            print(f"  {s} seed(s): {r['seed_samples_per_s']:,.0f} seed-samples/s "
                  f"({r['train_time_s']:.1f} s{', extrapolated' if r['extrapolated_from_1_seed'] else ''})",
                  flush=True)

    # 4. table
    rows = []
    for r in jax_rows:
        t = torch_rows.get(r["seeds"])
        rows.append({"seeds": r["seeds"], "ae_jax_seed_samples_per_s": r["seed_samples_per_s"],
                     "torch_seed_samples_per_s": t["seed_samples_per_s"] if t else None,
                     "ratio": r["seed_samples_per_s"] / t["seed_samples_per_s"] if t else None,
                     "gflops": r["gflops"], "pct_of_peak": r["pct_of_peak"], "compile_time_s": r["compile_time_s"],
                     "bound_pct_of_peak": r["floor"]["bound_pct_of_peak"], "pct_of_bound": r["pct_of_bound"]})
    head = (f"{'seeds':>5}  {'ae_jax seed-samples/s':>21}  {'PyTorch seed-samples/s':>22}  {'ratio':>6}  "
            f"{'GFLOP/s':>8}  {'% of peak':>9}  {'bound %':>7}  {'compile s':>9}")
    print("\n" + head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['seeds']:>5}  {r['ae_jax_seed_samples_per_s']:>21,.0f}  "
              f"{fmt(r['torch_seed_samples_per_s'], ',.0f'):>22}  {fmt(r['ratio'], '.2f'):>6}  "
              f"{r['gflops']:>8.1f}  {r['pct_of_peak']:>9.1f}  {r['bound_pct_of_peak']:>7.1f}  {r['compile_time_s']:>9.1f}")
    print(f"\npeak = best jitted float32 matmul measured ({peak['peak_at']}), {peak_gf:.1f} GFLOP/s; GFLOP/s = seed-samples/s x "
          f"{fps / 1e6:.3f} MFLOP (3 x forward matmul FLOPs, 2*sum(in*out) = {flops['forward_per_sample']:,})")
    print("bound % = the % of peak a step would reach if it cost only its matmuls and its Adam update, each timed "
          "alone (BatchNorm, ReLU, the loss and the batch gather for free)")
    if torch is None:
        print(f"PyTorch reference: {torch_skip_reason}")
    elif args.torch_extrapolate:
        print("PyTorch figures: 1 seed timed, N seeds = N x that time (--torch-extrapolate)")
    else:
        print("PyTorch figures: every seed count timed, seeds run one after another")

    tg = targets(rows, torch is not None)
    print("\ntargets (reported, not asserted):")
    for t in tg:
        print(f"  {t['status']:<12} {t['target']}: {t['detail']}")
    contended = busy(env)
    if contended:
        print(f"  NOTE: the load average was {env['load_average_at_start'][0]:.2f} on {os.cpu_count()} CPUs at the "
              "start: another job was running, so these figures are contended (PyTorch's OpenMP threads suffer "
              "most); rerun on an idle machine before quoting them")

    result = {
        "environment": env,
        "settings": {"model": MODEL, "latent_dim": LATENT, "batch_size": BATCH, "lr": LR, "epochs": args.epochs,
                     "n_train": args.n_train, "n_val": args.n_val, "seeds_list": args.seeds_list,
                     "data": "uniform [0,1) float32, numpy default_rng(0)",
                     "matmul_precision": PRECISIONS["float32"],
                     "torch_extrapolated": bool(args.torch_extrapolate) if torch is not None else None},
        "flops": flops,
        "matmul_peak": {"jax": peak, "torch": tpeak},
        "ae_jax": jax_rows,
        "torch": [torch_rows[s] for s in args.seeds_list if s in torch_rows] if torch is not None else None,
        "torch_skipped": torch_skip_reason,
        "table": rows,
        "targets": tg,
        "contended": contended,
        "elapsed_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
    }
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main)

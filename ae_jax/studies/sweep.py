"""A sweep: one model over a grid of traced hyperparameters, seeds x grid points trained in one compiled program,
each point put through the bake-off's tasks, and a report.

    run      <root>/<run name>            the grid's run folder (``run.py``'s, with every point's seeds)
    points   <root>/<run name>/points/<point run name>/
                                          one folder per grid point: its metrics.json (its block of the grid's,
                                          derived from it) and tasks/<task>.json; named as the point's own run
                                          would be (``ExperimentConfig.at``)
    report   <root>/sweeps/<run name>/    summary.json, README.md, fig_heatmap.png and its arrays fig_heatmap.npz

The report: a table per grid point (every metric, mean ± std over seeds), a
heatmap of the chosen metric with its std over seeds, and the best point
against the runner-up with a paired t-test over seeds (every point trains the
same seeds in the same program, so seed s of one point and seed s of another
share their minibatch order and noise draws: a pair).

Reruns reuse what is done: a complete run is not retrained, a point's task
already written for the same seeds is not redone (``force`` redoes all); when
a task is missing and the checkpoints are not at hand (they are not
committed), the grid is trained again and its files replaced once the new
ones are written.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from ..cache import compilation as compile_cache
from ..io import METRICS_KEYS, TASK_KEYS, atomic_write_text, read_json, write_json, write_npz
from ..tasks import EvalContext, get_task, run_task, task_done, task_path
from ..trainer import (ConfigError, ExperimentConfig, check_same_config, folder_lock, has_final_checkpoint,
                       load_final_state, run_experiment)
from ..trainer.provenance import provenance
from ..trainer.results import point_text
from .driver import PlannedRun, RunResult, SplitCache, StudyOptions, TimeLedger
from .report import PAIRED_NAME, SIGNIFICANCE, _fmt, paired, ranking

SWEEPS_DIR = "sweeps"
POINTS_DIR = "points"
HEATMAP = "fig_heatmap"


def direction(metric: str) -> bool:
    """Whether a higher value of `metric` is better; a ConfigError for a metric whose direction is not known."""
    from .bakeoff import QUALITY_TABLES, TABLES
    known = {m: higher for _, rows, *_ in TABLES + QUALITY_TABLES for m, _, higher, *_ in rows if higher is not None}
    if metric in known:
        return known[metric]
    if metric.startswith("probe_accuracy") or metric.endswith("_accuracy"):
        return True
    if any(w in metric for w in ("bce", "mse", "loss", "frechet")):
        return False
    raise ConfigError(f"--metric {metric!r}: which way is better is not known; choose one of "
                      f"{', '.join(sorted(known))} (or a test_bce/test_mse/probe_accuracy variant)")


@dataclasses.dataclass(frozen=True)
class Sweep:
    cfg: ExperimentConfig          # the grid (seeds x the product of its axes)
    tasks: tuple[str, ...]         # the bake-off's tasks to put every point through
    metric: str = "test_bce"       # the heatmap's and the ranking's metric

    def point_dir(self, root: Path, point: dict) -> Path:
        return Path(root) / self.cfg.name() / POINTS_DIR / self.cfg.at(point).name()


def point_metrics(metrics: dict, k: int, n_seeds: int) -> dict:
    """Grid point k's part of the grid's metrics.json, as its own run would have written it (its runs, its
    group, its diverged seeds with run indices counted within the point)."""
    lo, hi = k * n_seeds, (k + 1) * n_seeds
    group = metrics["groups"][k]
    return {**metrics, "runs": metrics["runs"][lo:hi], "groups": [group], "metrics": group["metrics"],
            "diverged": [{**d, "run": d["run"] - lo} for d in metrics["diverged"] if lo <= d["run"] < hi],
            "grid_point": {"of": metrics.get("model"), "index": k, "hparams": group.get("hparams", {})}}


def run_sweep(sweep: Sweep, opts: StudyOptions, log: Callable[[str], None] = print) -> dict:
    """Train the grid where missing, run every point's missing tasks, write the summary and the report."""
    cfg = sweep.cfg
    spec = cfg.validate()
    if cfg.grid_size < 2:
        raise ConfigError("a sweep needs a grid of at least two points: give one of "
                          "--beta/--noise-std/--sparsity/--lr a comma list")
    for t in sweep.tasks:
        try:
            task = get_task(t)
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
        if not task.needs_run:
            raise ConfigError(f"task {t} is a baseline (it trains no autoencoder): leave it out of --tasks")
    higher = direction(sweep.metric)
    tasks = [t for t in sweep.tasks if get_task(t).applies(spec)]
    compiled, ledger = compile_cache.tally(), TimeLedger()
    splits = SplitCache(opts.dataset, opts.data_dir, ledger)
    data = splits(cfg.variant)  # missing data fails before anything is written
    run_dir = opts.root / cfg.name()
    if not opts.force:
        check_same_config(run_dir, cfg, data)
    out_dir = opts.root / SWEEPS_DIR / cfg.name()
    points = cfg.points()
    pdirs = [sweep.point_dir(opts.root, p) for p in points]
    tag = f"[{cfg.name()}]"
    with folder_lock(out_dir):
        has_metrics = (run_dir / "metrics.json").exists()
        missing = [[t for t in tasks if opts.force or not task_done(d, t, cfg.seed_list)] for d in pdirs]
        how = None
        if opts.force or not has_metrics:
            log(f"{tag} training {cfg.grid_size} grid points x {cfg.seeds} seed(s) in one program")
            how = {"force": opts.force}
        elif any(missing) and not has_final_checkpoint(cfg.train_config(), run_dir / "checkpoints"):
            log(f"{tag} its trained parameters are not here (checkpoints are not committed): training again")
            how = {"reuse_complete": False}
        else:
            log(f"{tag} trained already (--force retrains it)")
        if how is not None:
            with ledger.timed("training"):
                run_experiment(cfg, out=run_dir, command=opts.command, log=log, splits=data, **how)
        metrics = read_json(run_dir / "metrics.json", METRICS_KEYS)
        state = None
        if any(missing):
            with ledger.timed("restoring checkpoints"):
                state = load_final_state(spec, cfg.train_config(), len(cfg.point_runs()), run_dir / "checkpoints")
            if state is None:
                raise ConfigError(f"{run_dir}: no final checkpoint to evaluate; pass --force to retrain")
        results = []
        for k, (point, pdir) in enumerate(zip(points, pdirs)):
            one = cfg.at(point)
            pm = point_metrics(metrics, k, cfg.seeds)
            with folder_lock(pdir):
                write_json(pdir / "metrics.json", pm)
                if missing[k]:
                    sub = jax.tree.map(lambda a: a[k * cfg.seeds:(k + 1) * cfg.seeds], state)
                    ctx = EvalContext(spec, one, sub, pdir, splits, log, opts.command)
                    for t in missing[k]:
                        log(f"{tag} {point_text(pm['groups'][0])}: task {t}")
                        with ledger.timed(f"task {t}"):
                            run_task(get_task(t), ctx)
                    (pdir / "tasks.json").unlink(missing_ok=True)
            results.append(RunResult(PlannedRun(one, tuple(tasks)), pdir, pm,
                                     {t: read_json(task_path(pdir, t), TASK_KEYS) for t in tasks}))
        with ledger.timed("summary and report"):
            summary = summarize(cfg, results)
            if not any(sweep.metric in e for e in summary["points"].values()):
                have = sorted({m for e in summary["points"].values() for m in e})
                raise ConfigError(f"--metric {sweep.metric!r} is not among this sweep's numbers; choose one of "
                                  f"{', '.join(have)}")
            summary["best"] = best(summary, sweep.metric, higher)
            write_json(out_dir / "summary.json", summary)
            write_report(out_dir, sweep, summary, opts, provenance(opts.command, data))
    log("\n" + headline(summary))
    log(f"\nsweep summary: {out_dir / 'summary.json'}; report: {out_dir / 'README.md'}")
    log(compile_cache.describe(since=compiled))
    log(ledger.describe())
    return summary


def summarize(cfg: ExperimentConfig, results: Sequence[RunResult]) -> dict:
    """{"model", "axes", "seeds", "points": {point label: {metric: {mean, std, values}}}, "hparams": {label: point}}."""
    points = {point_text(r.metrics["groups"][0]): r.entry() for r in results}
    return {"model": cfg.model, "dataset": cfg.dataset, "run": cfg.name(), "seeds": cfg.seed_list,
            "axes": {k: list(v) for k, v in cfg.axes().items()},
            "hparams": {point_text(r.metrics["groups"][0]): r.metrics["groups"][0].get("hparams", {}) for r in results},
            "points": points}


def best(summary: dict, metric: str, higher: bool) -> dict:
    """The best point on `metric` and the runner-up, with the paired t-test over seeds between them."""
    pts = summary["points"]
    order = ranking(pts, metric, higher)
    out = {"metric": metric, "higher_is_better": higher, "order": order}
    if not order:
        return out
    out["best"] = order[0]
    if len(order) > 1:
        a, b = pts[order[0]][metric], pts[order[1]][metric]
        p = paired(a["values"], b["values"])
        out.update(runner_up=order[1], test=PAIRED_NAME, p=None if math.isnan(p) else p,
                   significant=None if math.isnan(p) else bool(p < SIGNIFICANCE))
    return out


def headline(summary: dict) -> str:
    b = summary["best"]
    if "best" not in b:
        return f"no point has a finite {b['metric']}"
    m = summary["points"][b["best"]][b["metric"]]
    line = f"best on {b['metric']}: {b['best']} ({_fmt(m['mean'], m['std'])})"
    if "runner_up" in b:
        r = summary["points"][b["runner_up"]][b["metric"]]
        line += f"; runner-up {b['runner_up']} ({_fmt(r['mean'], r['std'])}). Ahead of the runner-up: "
        if b["p"] is None:
            line += "not testable here (fewer than 2 seeds, or no spread over seeds)"
        else:
            line += ("confirmed" if b["significant"] else "not shown") + f" ({b['test']} p = {b['p']:.2g})"
    return line


# ------------------------------------------------------------------ heatmap: arrays first, the figure from them
def heatmap_arrays(summary: dict, metric: str) -> dict[str, np.ndarray]:
    """mean and std [rows, cols] of `metric`: rows are the first axis's values, columns every combination of
    the others (their labels in "cols")."""
    axes = summary["axes"]
    names = list(axes)
    first, rest = names[0], names[1:]
    cols = [{}] if not rest else [dict(zip(rest, c)) for c in _product([axes[n] for n in rest])]
    mean = np.full((len(axes[first]), len(cols)), np.nan)
    std = np.full_like(mean, np.nan)
    for label, point in summary["hparams"].items():
        i = axes[first].index(point[first])
        j = cols.index({n: point[n] for n in rest})
        m = summary["points"][label].get(metric)
        if m is not None:
            mean[i, j] = np.nan if m["mean"] is None else m["mean"]
            std[i, j] = np.nan if m["std"] is None else m["std"]
    return {"mean": mean, "std": std, "rows": np.asarray(axes[first], float), "row_name": np.asarray(first),
            "cols": np.asarray([", ".join(f"{k} = {v:g}" for k, v in c.items()) for c in cols]),
            "metric": np.asarray(metric)}


def _product(lists):
    import itertools
    return list(itertools.product(*lists))


def draw_heatmap(npz: Path, png: Path) -> None:
    """The heatmap of a saved fig_heatmap.npz: each cell's mean ± std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..figures import save
    d = np.load(npz)
    mean, std = d["mean"], d["std"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * mean.shape[1], 1.2 + 0.7 * mean.shape[0]))
    im = ax.imshow(mean, cmap="viridis", aspect="auto")
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            ax.text(j, i, _fmt(mean[i, j], std[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(mean[i, j]) and mean[i, j] < np.nanmean(mean) else "black")
    ax.set_yticks(range(mean.shape[0]), [f"{v:g}" for v in d["rows"]])
    ax.set_ylabel(str(d["row_name"]))
    ax.set_xticks(range(mean.shape[1]), [str(c) or " " for c in d["cols"]], rotation=20, ha="right", fontsize=8)
    ax.set_title(f"{d['metric']}: mean ± std over seeds")
    fig.colorbar(im, ax=ax)
    save(fig, png)


def write_report(out_dir: Path, sweep: Sweep, summary: dict, opts: StudyOptions, prov: dict) -> None:
    out_dir = Path(out_dir)
    arrays = heatmap_arrays(summary, sweep.metric)
    write_npz(out_dir / f"{HEATMAP}.npz", **arrays)
    draw_heatmap(out_dir / f"{HEATMAP}.npz", out_dir / f"{HEATMAP}.png")
    cfg = sweep.cfg
    axes = ", ".join(f"{k} ∈ {{{', '.join(f'{v:g}' for v in vs)}}}" for k, vs in summary["axes"].items())
    lines = [f"# Sweep: {cfg.model} on {cfg.dataset}, {axes}", "",
             f"{cfg.grid_size} grid points x {cfg.seeds} seeds ({summary['seeds']}), {cfg.epochs} epochs, trained "
             f"in one compiled program (`{summary['run']}`). Every number is the mean ± std over seeds.", "",
             f"Command: `{opts.command}`", "",
             f"Made by revision {prov.get('revision') or 'unrecorded'} on {prov.get('host')}, {prov.get('created')}.",
             "", "## Best point", "", headline(summary), "",
             f"Rule: the best point on `{sweep.metric}` ({'higher' if summary['best']['higher_is_better'] else 'lower'}"
             f" is better) is ahead of the runner-up when a {PAIRED_NAME} over seeds gives p < {SIGNIFICANCE}; "
             "otherwise the ranking is not shown (a test that is not significant refutes nothing).", "",
             f"![{sweep.metric}]({HEATMAP}.png)", "",
             f"Heatmap: `{sweep.metric}` per grid point (rows: {arrays['row_name']}), mean ± std over seeds; "
             f"its arrays are in `{HEATMAP}.npz`.", "", "## Every grid point", ""]
    for label, entry in summary["points"].items():
        lines += [f"### {label}", "", "| metric | mean ± std | per-seed values |", "|---|---|---|"]
        for m, v in entry.items():
            vals = ", ".join("n/a" if x is None or not math.isfinite(x) else f"{x:.4g}" for x in v["values"])
            lines.append(f"| {m} | {_fmt(v['mean'], v['std'])} | {vals} |")
        lines.append("")
    atomic_write_text(out_dir / "README.md", "\n".join(lines))

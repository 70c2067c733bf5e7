"""What a finished run reports: metrics.json's content (per run group, mean ± std over seeds) and its table."""
from __future__ import annotations

import numpy as np

from ..cache import compilation as compile_cache
from ..data import Data, Splits
from ..io import aggregate, fmt_mean_std
from ..models import NUM_CLASSES
from .config import ExperimentConfig
from .loop import TrainOutput
from .provenance import run_entry

def snapshot_data(splits: Splits, k: int) -> Data:
    """The images whose codes a run with snapshots keeps: the first min(k, test size) test images."""
    return Data(splits.x_test[:k], splits.y_test[:k])


def per_class(values: np.ndarray, labels: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """{"<name>_class<d>": [R]}: the mean of values [R, N] over the images of each class d."""
    return {f"{name}_class{d}": values[:, labels == d].mean(axis=1) for d in range(NUM_CLASSES)
            if np.any(labels == d)}


def result_metrics(cfg: ExperimentConfig, out: TrainOutput, test: dict[str, np.ndarray], y_test: np.ndarray) -> dict:
    """metrics.json content: per run group (one per grid point), each metric's values, mean and std over seeds.

    A group holds its "beta" (None: the model's own, as older code wrote it), its "hparams" (the point's value
    of every axis of the grid, {} without one) and its seeds.

    ``test`` holds per-run, per-image "bce" and "mse" [R, N]; both are
    reported overall and per class, whatever the model trained with.
    """
    runs = cfg.point_runs()
    E = cfg.epochs
    per_run = {  # copies: the NaN-masking below must not write into the curves
        "final_train_loss": out.train_curve[E - 1].copy(),
        "final_val_loss": out.val_curve[E - 1].copy(),
        "test_bce": np.asarray(test["bce"], np.float64).mean(axis=1),
        "test_mse": np.asarray(test["mse"], np.float64).mean(axis=1),
    }
    for k in ("bce", "mse"):
        per_run.update(per_class(np.asarray(test[k], np.float64), y_test, f"test_{k}"))
    for r in out.diverged:  # a diverged run is not averaged in, even if its last loss is finite again
        for v in per_run.values():
            v[r] = np.nan
    train_time = float(out.epoch_time.sum())
    samples = len(runs) * out.samples_per_epoch * E
    groups = []
    for point in cfg.points():
        idx = [i for i, (_, p) in enumerate(runs) if p == point]
        g = {"beta": point.get("beta"), "hparams": point, "seeds": [runs[i][0] for i in idx],
             "metrics": {k: aggregate(v[idx]) for k, v in per_run.items()}}
        g["metrics"]["train_time_s"] = aggregate([train_time] * len(idx))
        groups.append(g)
    return {
        "model": cfg.model, "dataset": cfg.dataset, "variant": cfg.variant, "latent_dim": cfg.latent,
        "runs": [run_entry(s, p) for s, p in runs],
        "diverged": [{"run": r, **run_entry(*runs[r]), "epoch": e} for r, e in out.diverged.items()],
        "groups": groups,
        "metrics": groups[0]["metrics"] if len(groups) == 1 else None,
        "timing": {"train_time_s": train_time, "compile_time_s": out.compile_time_s,
                   "train_time_per_seed_s": train_time / len(runs),
                   "seed_samples_per_s": samples / train_time if train_time > 0 else None,
                   "note": "all runs train together in one compiled program, so they share one wall-clock",
                   # with a persistent cache, a program compiled before is loaded and compile_time_s is the load's
                   "compilation_cache": compile_cache.in_use() is not None},
        "device": out.device,
    }


def point_text(entry: dict) -> str:
    """'beta = 2, lr = 0.001': the grid point of a group, run or diverged entry ('' for none; older files: beta)."""
    point = entry.get("hparams")
    if point is None:
        point = {k: v for k, v in entry.items() if k not in ("run", "seed", "seeds", "epoch", "metrics") and v is not None}
    return ", ".join(f"{k} = {v:g}" for k, v in point.items())


def device_text(device: dict | str) -> str:
    """'8 x tpu (TPU v2)' from a metrics.json device record (older runs stored the text)."""
    if isinstance(device, str):
        return device
    return f"{device['count']} x {device['platform']} ({device['kind']})"


def format_table(metrics: dict) -> str:
    """metric | mean ± std | per-seed values, one block per grid point."""
    lines = []
    for g in metrics["groups"]:
        head = f"{metrics['model']} on {metrics['dataset']} ({metrics['variant']}, n = {metrics['latent_dim']})"
        head += ", " + point_text(g) if point_text(g) else ""
        lines.append(head + f", seeds {g['seeds']}")
        rows = [("metric", "mean ± std", "per-seed values")]
        for k, m in g["metrics"].items():
            vals = ", ".join("nan" if v is None or not np.isfinite(v) else f"{v:.4g}" for v in m["values"])
            rows.append((k, fmt_mean_std(m), vals))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        for i, r in enumerate(rows):
            lines.append(" | ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip())
            if i == 0:
                lines.append("-+-".join("-" * x for x in w))
        lines.append("")
    t = metrics["timing"]
    lines.append(f"train {t['train_time_s']:.1f} s for all runs together (+ {t['compile_time_s']:.1f} s compile), "
                 f"{t['seed_samples_per_s'] or 0:,.0f} seed-samples/s on {device_text(metrics['device'])}")
    for d in metrics["diverged"]:
        at = point_text(d)
        lines.append(f"WARNING: seed {d['seed']}" + (f" ({at})" if at else "")
                     + f" diverged at epoch {d['epoch']}: excluded from mean and std")
    return "\n".join(lines)

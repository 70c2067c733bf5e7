"""Anomaly detection: a model trained without one class scores test images by reconstruction error.

Arrays (``roc.npz``): "scores" [R, N], every seed's score (summed BCE) of each
test image; "positive" [N], 1 for the unseen class; "auc" [R]; "seeds" [R];
"valid" [R], False for a seed whose training diverged.
"""
from __future__ import annotations

import numpy as np

from .. import figures
from ..data import ANOMALY_CLASS
from ..io import write_npz
from .base import EvalContext, Task, TaskResult


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and ROC curve (fpr, tpr) with `positive` as the positive class (nan for non-finite scores)."""
    from sklearn.metrics import roc_auc_score, roc_curve
    if not np.isfinite(scores).all():
        return float("nan"), np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = roc_curve(positive, scores)
    return float(roc_auc_score(positive, scores)), fpr, tpr


def anomaly_labels(y: np.ndarray) -> np.ndarray:
    return (y == ANOMALY_CLASS).astype(np.int32)


class Anomaly(Task):
    """ROC AUC of the summed-BCE score with class 1 positive; also the original's signed score, to show its bug."""
    name = "anomaly"
    files = ("roc.npz",)

    def applies(self, spec) -> bool:
        # A conditional model would read each test image's true label, the unseen class's included,
        # so the label itself would tell anomalies apart: no honest score.
        return not spec.conditional and super().applies(spec)

    def run(self, ctx: EvalContext) -> TaskResult:
        ctx.log("    anomaly scores")
        ev, pos = ctx.test, anomaly_labels(ctx.data.y_test)
        aucs, signed, curves = [], [], []
        for i in range(len(ctx.seeds)):
            auc, fpr, tpr = roc_auc(ev["bce"][i], pos)
            aucs.append(auc)
            signed.append(roc_auc(ev["signed_error"][i], pos)[0])
            if ctx.valid[i]:
                curves.append((fpr, tpr, auc, ctx.seeds[i]))
        write_npz(ctx.run_dir / "roc.npz", scores=np.asarray(ev["bce"]), positive=pos, auc=np.asarray(aucs),
                  seeds=np.asarray(ctx.seeds), valid=ctx.valid)
        figures.roc_figure([c[:3] for c in curves], [c[3] for c in curves], ctx.run_dir / "roc.png",
                           f"{ctx.cfg.model}: class {ANOMALY_CLASS} as anomaly (score: BCE)")
        return TaskResult({"anomaly_auc": np.asarray(aucs), "anomaly_auc_signed_bug": np.asarray(signed)},
                          {"roc": "roc.png"})

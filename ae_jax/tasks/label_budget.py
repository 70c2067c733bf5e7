"""Label budgets: the linear probe and the two baselines with more and fewer labels, every seed.

Budgets (``label_budget.budgets_for``): 0.1 %, 1 %, 10 % and 100 % of the full
training split, keeping those with at least one label per class: 55, 550,
5 500 and 55 000 on MNIST-sized data; 13, 135 and 1 350 on digits (1 350
training images: 1.35 labels would not cover ten classes, and no budget
exceeds the split). The labelled images of a budget are a class-balanced
prefix of one fixed order of the training split (``label_budget``), so the
smaller sets are inside the larger ones. They are not the protocol's labelled
split (the first images of the split permutation) that ``probe`` uses, so
``probe_accuracy_550labels`` and ``probe_accuracy`` differ on MNIST by the
choice of the 550 images.

Everything else is the probe's and the baselines' own recipe (``probe``,
``scratch``, ``random_encoder``): the same validation and test images, the
same keys (the probe's stream of each seed, whatever the budget), optimiser
and early stopping. Metrics: ``probe_accuracy_<k>labels`` for each budget k,
in a model's run (task ``label_budget``: a linear layer on its frozen codes)
and in each baseline's folder (tasks ``scratch_budget``: the encoder and a
linear layer trained on the k labels; ``random_encoder_budget``: only the
linear layer on a random encoder, BatchNorm in training mode as in
``random_encoder``).
"""
from __future__ import annotations

import numpy as np

from . import label_subsets as lb
from ..data import Data
from .base import EvalContext, Task, TaskResult
from .probe import label_layout, linear_probe
from .random_encoder import random_encoder_baseline
from .scratch import LabelledBaseline, scratch_baseline


def budget_metric(k: int) -> str:
    """The metric name of budget k: "probe_accuracy_<k>labels"."""
    return f"probe_accuracy_{int(k)}labels"


def budgets_of(ctx: EvalContext) -> dict[int, np.ndarray]:
    """{budget: indices into the full training split} for ctx's dataset."""
    full = ctx.splits("full")
    return lb.budget_subsets(ctx.cfg.dataset, full.y_train)


def _info(subsets: dict[int, np.ndarray], n_train: int) -> dict:
    return {"budgets": sorted(subsets), "n_train": n_train, "subset_seed": lb.BUDGET_SEED,
            "subsets": "nested class-balanced prefixes of one fixed order of the full training split"}


class LabelBudget(Task):
    """The linear probe on the model's frozen codes at every label budget."""
    name = "label_budget"

    def run(self, ctx: EvalContext) -> TaskResult:
        full = ctx.splits("full")
        subsets = budgets_of(ctx)
        ctx.log(f"    linear probe at {', '.join(map(str, subsets))} labels")
        h_train = ctx.evaluate(Data(full.x_train, full.y_train))["h"]            # [R, N, e]
        h_val = ctx.evaluate(Data(full.x_val, full.y_val))["h"]
        h_test = ctx.test["h"]                                                      # the same test images
        layout, metrics = label_layout(ctx), {}
        for k, idx in subsets.items():
            (h_tr,) = lb.take_labelled(idx, h_train, axis=1)
            (y_tr,) = lb.take_labelled(idx, full.y_train)
            out = linear_probe(ctx.spec, ctx.cfg.latent, ctx.state.params, ctx.seeds, ctx.hps,
                               {"train": h_tr, "val": h_val, "test": h_test},
                               {"train": y_tr, "val": full.y_val, "test": full.y_test}, layout)
            metrics[budget_metric(k)] = out["test_accuracy"]
        return TaskResult(metrics, {}, _info(subsets, len(full.y_train)))


class BudgetBaseline(LabelledBaseline):
    """A labelled-data baseline (no autoencoder) at every label budget instead of the labelled split."""

    def run(self, ctx: EvalContext) -> TaskResult:
        full = ctx.splits("full")
        subsets = budgets_of(ctx)
        layout, metrics = label_layout(ctx), {}
        for k, idx in subsets.items():
            ctx.log(f"[{self.name}] {self.what}, {k} labels")
            x_tr, y_tr = lb.take_labelled(idx, full.x_train, full.y_train)
            r = self.baseline(ctx.seeds, x_tr, y_tr, full.x_val, full.y_val, full.x_test, full.y_test,
                              layout=layout)
            metrics[budget_metric(k)] = r["test_accuracy"]
        return TaskResult(metrics, {}, _info(subsets, len(full.y_train)))


class ScratchBudget(BudgetBaseline):
    """``scratch`` (encoder + linear layer trained on the labels alone) at every label budget."""
    name = "scratch_budget"
    what = "encoder + linear layer from scratch"

    def baseline(self, seeds, *data, layout=None):
        return scratch_baseline(seeds, *data, layout=layout)


class RandomEncoderBudget(BudgetBaseline):
    """``random_encoder`` (a linear layer on a random encoder) at every label budget."""
    name = "random_encoder_budget"
    what = "linear head on a random encoder"

    def baseline(self, seeds, *data, layout=None):
        return random_encoder_baseline(seeds, *data, layout=layout)

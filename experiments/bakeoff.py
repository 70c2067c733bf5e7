"""Reproduce the whole bake-off: train what is missing, run every task, write the report.

    python experiments/bakeoff.py --dataset=digits --seeds=5
    python experiments/bakeoff.py --dataset=mnist --seeds=5 --data-dir=DIR

Trains all nine models at n = 20 and at n = 2 on the anomaly split, runs the
seven tasks and the quality tasks (sample and interpolation quality, label
budgets) for every seed, and writes results/<dataset>/summary.json,
results/<dataset>/README.md and its figures (fig_*.png with their arrays in
fig_*.npz). Finished models are reused; --force redoes them.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ae_jax.cli import check_dataset, recorded_command, ArgParser, fail, guarded, name_list  # noqa: E402


def main(argv=None) -> int:
    from ae_jax.data import DATASETS
    from ae_jax.models import CONTESTANTS, MODELS
    p = ArgParser(prog="bakeoff.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--models", type=name_list, default=list(CONTESTANTS), help="comma list (default: all nine)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="results folder (default results/<dataset>)")
    p.add_argument("--force", action="store_true", help="retrain and re-evaluate every selected model")
    args = p.parse_args(argv)
    from ae_jax.studies import STUDIES, StudyOptions, run_study
    check_dataset(args.dataset)
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        fail(f"unknown model {bad[0]!r}; choose from {', '.join(MODELS)}" if bad else "--models is empty")
    if args.seeds < 1:
        fail(f"--seeds must be at least 1, got {args.seeds}")
    if args.epochs < 3:
        fail(f"--epochs must be at least 3 (the stacked model trains in 3 phases), got {args.epochs}")
    command = recorded_command("bakeoff.py", argv)
    opts = StudyOptions(dataset=args.dataset, models=args.models, seeds=args.seeds, epochs=args.epochs,
                        data_dir=args.data_dir, out=args.out, force=args.force, command=command)

    def body() -> int:
        run_study(STUDIES["bakeoff"], opts)
        return 0

    return guarded(body, "finished models and checkpoints are kept; rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())

"""Train the bake-off's two outliers with 20 seeds and place the published single runs among them.

    python experiments/more_seeds.py --dataset=digits --seeds=4 --epochs=3
    python experiments/more_seeds.py --dataset=mnist --seeds=20 --data-dir=DIR

Trains shallow and beta_vae_strict (--models) at the protocol's n = 20 with
--seeds seeds in one program each, runs reconstruction, the linear probe and
the code-unit count for every seed, and writes results/<dataset>/more_seeds/
(the run folders, summary.json, README.md, seeds.png with seeds.npz). The
report ranks each published MNIST number among the seeds and relates shallow's
dead ReLU units to its error. Finished runs are reused; --force redoes them.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ae_jax.cli import check_dataset, recorded_command, ArgParser, fail, guarded, name_list  # noqa: E402


def main(argv=None) -> int:
    from ae_jax.data import DATASETS
    from ae_jax.models import MODELS
    from ae_jax.studies.more_seeds import MODELS as OUTLIERS, SEEDS, default_root
    p = ArgParser(prog="more_seeds.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--models", type=name_list, default=list(OUTLIERS),
                   help=f"comma list of registered models (default {','.join(OUTLIERS)})")
    p.add_argument("--data-dir", default=None, help="folder with the four IDX .gz files (or set AE_JAX_DATA_DIR)")
    p.add_argument("--out", default=None, help="where the runs and the report go (default results/<dataset>/more_seeds)")
    p.add_argument("--force", action="store_true", help="retrain and re-evaluate every run")
    args = p.parse_args(argv)
    from ae_jax.studies import STUDIES, StudyOptions, run_study
    check_dataset(args.dataset)
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        fail(f"unknown model {bad[0]!r}; choose from {', '.join(MODELS)}" if bad else "--models is empty")
    if args.seeds < 2:
        fail(f"--seeds must be at least 2 (a distribution needs several), got {args.seeds}")
    if args.epochs < 1:
        fail(f"--epochs must be at least 1, got {args.epochs}")
    opts = StudyOptions(dataset=args.dataset, models=args.models, seeds=args.seeds, epochs=args.epochs,
                        data_dir=args.data_dir, out=args.out or default_root(args.dataset), force=args.force,
                        command=recorded_command("more_seeds.py", argv))

    def body() -> int:
        run_study(STUDIES["more_seeds"], opts)
        return 0

    return guarded(body, "finished runs and checkpoints are kept; rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())

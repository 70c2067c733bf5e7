"""Plain autoencoder vs VAE vs conditional VAE (docs/studies.md, part A): train what is missing, write the report.

    python experiments/ae_vs_vae.py --dataset=digits --seeds=2 --epochs=3
    python experiments/ae_vs_vae.py --dataset=mnist --seeds=5 --data-dir=DIR

Trains vanilla, vae and cvae with the MSE loss at n = 20 and at n = 2, and the
n = 2 VAE with beta = 0 and beta = 1 in one program that keeps the codes of the
first 1000 test images after every epoch; runs the study's tasks for every
seed; writes results/<dataset>/ae_vs_vae/ (summary.json, README.md, figures
with their arrays as .npz, cvae_samples.npz). Runs finished earlier (by this
study or any other) are reused; --force redoes them.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ae_jax.cli import check_dataset, recorded_command, ArgParser, fail, guarded  # noqa: E402


def main(argv=None) -> int:
    from ae_jax.data import DATASETS
    p = ArgParser(prog="ae_vs_vae.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--data-dir", default=None, help="folder with the four IDX .gz files (or set AE_JAX_DATA_DIR)")
    p.add_argument("--out", default=None, help="results root (default results/<dataset>); the study writes into "
                                                "its ae_vs_vae/ folder, the runs beside it")
    p.add_argument("--force", action="store_true", help="retrain and re-evaluate every run of the study")
    args = p.parse_args(argv)
    from ae_jax.studies import STUDIES, StudyOptions, run_study
    check_dataset(args.dataset)
    if args.seeds < 1:
        fail(f"--seeds must be at least 1, got {args.seeds}")
    if args.epochs < 1:
        fail(f"--epochs must be at least 1, got {args.epochs}")
    command = recorded_command("ae_vs_vae.py", argv)
    opts = StudyOptions(dataset=args.dataset, seeds=args.seeds, epochs=args.epochs, data_dir=args.data_dir,
                        out=args.out, force=args.force, command=command)

    def body() -> int:
        run_study(STUDIES["ae_vs_vae"], opts)
        return 0

    return guarded(body, "finished runs and checkpoints are kept; rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())

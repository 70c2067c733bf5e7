"""Train the bake-off's two outliers with 20 seeds and place the published single runs among them.

    python experiments/more_seeds.py --dataset=digits --seeds=4 --epochs=3
    python experiments/more_seeds.py --dataset=mnist --seeds=20 --data-dir=DIR

Trains shallow and beta_vae_strict (--models) at the protocol's n = 20 with
--seeds seeds in one program each, runs reconstruction, the linear probe and
the code-unit count for every seed, and writes runs/<dataset>/more_seeds/
(the run folders, summary.json, README.md, seeds.png with seeds.npz). The
report ranks each published MNIST number among the seeds and relates shallow's
dead ReLU units to its error. Finished runs are reused; --force redoes them.
"""
from __future__ import annotations

from pathlib import Path

from ae_jax.cli import check_study_args, recorded_command, run_script, run_study_script, study_parser


def main(argv=None) -> int:
    from ae_jax.studies.more_seeds import FOLDER, MODELS as OUTLIERS, SEEDS, default_root
    p = study_parser("more_seeds.py", __doc__, seeds=SEEDS, models=list(OUTLIERS),
                     out_help="results root, as every study's: the runs and the report go to ROOT/more_seeds "
                              "(default runs/<dataset>; the committed one is results/<dataset>)",
                     force_help="retrain and re-evaluate every run")
    args = p.parse_args(argv)
    check_study_args(args, min_seeds=2, seeds_why=" (a distribution needs several)")
    from ae_jax.studies import StudyOptions
    opts = StudyOptions(dataset=args.dataset, models=args.models, seeds=args.seeds, epochs=args.epochs,
                        data_dir=args.data_dir, force=args.force,
                        out=Path(args.out) / FOLDER if args.out else default_root(args.dataset),
                        command=recorded_command("more_seeds.py", argv))
    return run_study_script("more_seeds", opts)


if __name__ == "__main__":
    run_script(main)

"""Reproduce the whole bake-off: train what is missing, run every task, write the report.

    python experiments/bakeoff.py --dataset=digits --seeds=5
    python experiments/bakeoff.py --dataset=mnist --seeds=5 --data-dir=DIR

Trains all nine models at n = 20 and at n = 2 on the anomaly split, runs the
seven tasks and the quality tasks (sample and interpolation quality, label
budgets) for every seed, and writes runs/<dataset>/summary.json,
runs/<dataset>/README.md and its figures (fig_*.png with their arrays in
fig_*.npz). Finished models are reused; --force redoes them.
"""
from __future__ import annotations



from ae_jax.cli import check_study_args, recorded_command, run_script, run_study_script, study_parser


def main(argv=None) -> int:
    from ae_jax.models import CONTESTANTS
    p = study_parser("bakeoff.py", __doc__, models=list(CONTESTANTS), models_help="comma list (default: all nine)",
                     out_help="results folder (default runs/<dataset>; the committed one is results/<dataset>)",
                     force_help="retrain and re-evaluate every selected model")
    args = p.parse_args(argv)
    check_study_args(args, min_epochs=3, epochs_why=" (the stacked model trains in 3 phases)")
    from ae_jax.studies import StudyOptions
    opts = StudyOptions(dataset=args.dataset, models=args.models, seeds=args.seeds, epochs=args.epochs,
                        data_dir=args.data_dir, out=args.out, force=args.force,
                        command=recorded_command("bakeoff.py", argv))
    return run_study_script("bakeoff", opts, "finished models and checkpoints are kept")


if __name__ == "__main__":
    run_script(main)

"""Plain autoencoder vs VAE vs conditional VAE (docs/studies.md, part A): train what is missing, write the report.

    python experiments/ae_vs_vae.py --dataset=digits --seeds=2 --epochs=3
    python experiments/ae_vs_vae.py --dataset=mnist --seeds=5 --data-dir=DIR

Trains vanilla, vae and cvae with the MSE loss at n = 20 and at n = 2, and the
n = 2 VAE with beta = 0 and beta = 1 in one program that keeps the codes of the
first 1000 test images after every epoch; runs the study's tasks for every
seed; writes runs/<dataset>/ae_vs_vae/ (summary.json, README.md, figures
with their arrays as .npz, cvae_samples.npz; --out names another root than runs/<dataset>). Runs finished earlier (by this
study or any other) are reused; --force redoes them.
"""
from __future__ import annotations



from ae_jax.cli import check_study_args, recorded_command, run_script, run_study_script, study_parser


def main(argv=None) -> int:
    p = study_parser("ae_vs_vae.py", __doc__, out_help="results root (default runs/<dataset>); the study writes "
                                                       "into its ae_vs_vae/ folder, the runs beside it")
    args = p.parse_args(argv)
    check_study_args(args)
    from ae_jax.studies import StudyOptions
    opts = StudyOptions(dataset=args.dataset, seeds=args.seeds, epochs=args.epochs, data_dir=args.data_dir,
                        out=args.out, force=args.force, command=recorded_command("ae_vs_vae.py", argv))
    return run_study_script("ae_vs_vae", opts)


if __name__ == "__main__":
    run_script(main)

"""Reconstruction error against the latent size (docs/studies.md, part A, claims 1-3): train what is missing, report.

    python experiments/latent_sweep.py --dataset=digits --seeds=2 --epochs=3 --latent-dims=2,20
    python experiments/latent_sweep.py --dataset=mnist --seeds=5 --data-dir=DIR

Trains each model of --models at each latent size of --latent-dims with
--loss (default MSE), under the protocol's hidden widths and with the n = 20
widths held at every n (--widths), runs the reconstruction task for every
seed, and writes runs/<dataset>/latent_sweep/ (summary.json, README.md,
error_vs_latent.png, per_class.png, reconstructions.png, each figure's arrays
as .npz). The runs are ordinary run folders under runs/<dataset>/, shared
with the other studies: a run trained earlier (by this study or any other) is
reused, so the sweep builds up size by size and an interrupted one goes on
where it stopped; --force redoes them.
"""
from __future__ import annotations

import argparse


from ae_jax.cli import (
    check_study_args, fail, name_list, recorded_command, run_script, run_study_script, study_parser)


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of whole numbers, got {text!r}") from None


def main(argv=None) -> int:
    from ae_jax.models.losses import RECON_LOSSES
    from ae_jax.models import get_model
    from ae_jax.studies.latent_sweep import LATENT_DIMS, LOSS, MODELS as SWEEP_MODELS, WIDTHS
    p = study_parser("latent_sweep.py", __doc__, models=list(SWEEP_MODELS),
                     out_help="results root (default runs/<dataset>); the study writes into its latent_sweep/ "
                              "folder, the runs beside it",
                     force_help="retrain and re-evaluate every run of the sweep")
    p.add_argument("--latent-dims", type=int_list, default=list(LATENT_DIMS),
                   help=f"comma list of latent sizes (default {','.join(map(str, LATENT_DIMS))})")
    p.add_argument("--loss", default=LOSS, help=f"reconstruction loss trained with: {', '.join(RECON_LOSSES)} "
                                                f"(default {LOSS}, as the study)")
    p.add_argument("--widths", type=name_list, default=list(WIDTHS),
                   help="comma list of width settings: protocol (the protocol's hidden widths for each n), fixed "
                        "(the n = 20 widths at every n); default both")
    args = p.parse_args(argv)
    check_study_args(args)
    if not args.latent_dims:
        fail("--latent-dims is empty; give sizes like 2,5,10,20")
    small = [n for n in args.latent_dims if n < 1]
    if small:
        fail(f"--latent-dims must be positive whole numbers, got {small[0]}")
    for m in args.models:
        most = 1024 // get_model(m).bottleneck.encoder_factor
        big = [n for n in args.latent_dims if n > most]
        if big:
            fail(f"--latent-dims: n = {big[0]} is too large for {m} (at most {most})")
    if args.loss not in RECON_LOSSES:
        fail(f"--loss must be one of {', '.join(RECON_LOSSES)}, got {args.loss!r}")
    bad = [w for w in args.widths if w not in WIDTHS]
    if bad or not args.widths:
        fail(f"--widths must be a comma list of {', '.join(WIDTHS)}, got {bad[0]!r}" if bad else "--widths is empty")
    from ae_jax.studies import StudyOptions
    opts = StudyOptions(dataset=args.dataset, models=args.models, seeds=args.seeds, epochs=args.epochs,
                        data_dir=args.data_dir, out=args.out, force=args.force,
                        command=recorded_command("latent_sweep.py", argv),
                        latent_dims=args.latent_dims, loss=args.loss, widths=args.widths)
    return run_study_script("latent_sweep", opts)


if __name__ == "__main__":
    run_script(main)

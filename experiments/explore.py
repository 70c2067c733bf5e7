"""The latent explorer: train (or reuse) an AE and a VAE at n = 4 and write an interactive page.

    python experiments/explore.py --dataset=mnist --data-dir=DIR
    python experiments/explore.py --dataset=digits --epochs=20          # a quick try, no download
    python experiments/explore.py --models=vanilla,vae,beta_vae_strict  # more models side by side

Writes runs/<dataset>/explorer/ (with --out=ROOT, ROOT/explorer/): index.html (open it in any browser, from
disk: it is one self-contained file), reference.json, screenshot.png and screenshot_phone.png (when a
headless Chromium is installed), pca.png (+ .npz), ranges.json and README.md.
The training runs are ordinary run folders beside it, runs/<dataset>/<name> (e.g.
vanilla_n4, vae_n4; with --out=ROOT, ROOT/<name>), reused when the same command
runs again and shared with any study that needs the same run; the folder's
README.md names them with the revision and command that trained them. The page
(under 8 MB for the default models and seeds) shows the models side by side and
fits a phone's screen. The README also checks the original article's claims
about the two codes' ranges: raw ranges are not testable here (the AE's code
scale is arbitrary in this architecture), their form in the training codes' own
standard deviations is tested over seeds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ae_jax.cli import (
    ArgParser, add_data_dir_arg, check_dataset, fail, go_on_hint, guarded, name_list, out_dir, recorded_command,
    run_script)
from ae_jax.io import RUNS_ROOT


def parse(argv=None):
    from ae_jax.data import DATASETS
    p = ArgParser(prog="explore.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default mnist)")
    add_data_dir_arg(p)
    p.add_argument("--models", type=name_list, default=["vanilla", "vae"],
                   help="comma list of models shown side by side (default vanilla,vae); deep dense models with a plain "
                        "or Gaussian code")
    p.add_argument("--latent-dim", type=int, default=4, help="latent size n (default 4)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..N-1 (default 5)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    p.add_argument("--out", type=out_dir, default=None,
                   help="results root: the page goes to ROOT/explorer, the runs to ROOT/<name> (default runs/<dataset>; "
                        "the committed page is results/<dataset>)")
    p.add_argument("--force", action="store_true", help="retrain the models even if their runs are complete")
    p.add_argument("--no-screenshot", action="store_true", help="do not look for a browser to take screenshot.png")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    check_dataset(args.dataset)
    for flag, v in (("--latent-dim", args.latent_dim), ("--seeds", args.seeds), ("--epochs", args.epochs)):
        if v < 1:
            fail(f"{flag} must be at least 1, got {v}")
    models = list(dict.fromkeys(args.models))
    runs_root = Path(args.out) if args.out else RUNS_ROOT / args.dataset  # as every study's --out: the results root
    out = runs_root / "explorer"
    command = recorded_command("explore.py", argv)

    def body() -> int:
        from ae_jax.data import load_splits
        from ae_jax.explorer.study import build_explorer, check_models, trained_states
        check_models(models)  # refuse before loading data or training anything
        splits = load_splits(args.dataset, "full", args.data_dir)
        trained = trained_states(models, args.dataset, args.latent_dim, args.seeds, args.epochs, runs_root,
                                 data_dir=args.data_dir, splits=splits, force=args.force, command=command)
        result = build_explorer(trained, splits, out, command=command, dataset=args.dataset,
                                take_screenshot=not args.no_screenshot)
        for m, t in result["ranges"]["models"].items():
            lo, hi = t["over_seeds"]["shown_inputs"]["lo"]["mean"], t["over_seeds"]["shown_inputs"]["hi"]["mean"]
            orig = t.get("original_shown_range")
            print(f"{m}: codes of the shown inputs range over [{lo:.2f}, {hi:.2f}] (mean over seeds)"
                  + (f"; the original article: [{orig[0]:.2f}, {orig[1]:.2f}]" if orig else ""))
        print(f"\nopen {result['page'].resolve()} in a browser")
        return 0

    return guarded(body, "finished epochs are kept in the runs' checkpoints; " + go_on_hint(args.force))


if __name__ == "__main__":
    run_script(main)

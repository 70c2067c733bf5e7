"""Sweep one model over a grid of traced hyperparameters: every grid point and seed in one compiled program,
each point through the bake-off's tasks, one report.

    python experiments/sweep.py --model=denoising --noise-std=0.1,0.25,0.5 --lr=3e-4,1e-3,3e-3 --seeds=5
    python experiments/sweep.py --model=beta_vae --beta=0.5,1,2,4 --dataset=digits --metric=probe_accuracy
    python experiments/sweep.py --model=sparse --sparsity=0.05,0.25 --beta=1,3 --tasks=reconstruction,probe

Writes the grid's run to <root>/<run name> (one folder per grid point under its points/), and the report
to <root>/sweeps/<run name>/: README.md (a table per grid point, mean ± std over seeds; a heatmap of
--metric with its std; the best point against the runner-up with a paired t-test over seeds),
summary.json and fig_heatmap.png with its arrays in fig_heatmap.npz. <root> is runs/<dataset> unless
--out names another. Reruns reuse what is done; --force redoes it.
"""
from __future__ import annotations

from ae_jax.cli import (check_study_args, float_list, guarded, go_on_hint, name_list, recorded_command, run_script,
                        study_parser)


def main(argv=None) -> int:
    from ae_jax.models import MODELS
    from ae_jax.models.hparams import TRACED
    from ae_jax.studies.bakeoff import FULL_TASKS
    p = study_parser("sweep.py", __doc__, force_help="retrain the grid and redo every point's tasks")
    p.add_argument("--model", required=True, help=f"one of {', '.join(MODELS)}")
    for t in TRACED:
        p.add_argument(t.flag, type=float_list, default=None, help=t.help + "; a comma list is an axis of the grid")
    p.add_argument("--latent-dim", type=int, default=None, help="latent size n (default 20)")
    p.add_argument("--tasks", type=name_list, default=list(FULL_TASKS),
                   help=f"comma list of the bake-off's tasks (default: all of them: {','.join(FULL_TASKS)})")
    p.add_argument("--metric", default="test_bce", help="the metric of the heatmap and the ranking (default test_bce)")
    args = p.parse_args(argv)
    check_study_args(args)
    from ae_jax.studies import StudyOptions
    from ae_jax.studies.sweep import Sweep, run_sweep
    from ae_jax.trainer import ExperimentConfig
    grid = {t.name: tuple(v) for t in TRACED if (v := getattr(args, t.flag[2:].replace("-", "_"))) is not None}
    cfg = ExperimentConfig(model=args.model, dataset=args.dataset, latent_dim=args.latent_dim, seeds=args.seeds,
                           epochs=args.epochs, grid=grid)
    opts = StudyOptions(dataset=args.dataset, seeds=args.seeds, epochs=args.epochs, data_dir=args.data_dir,
                        out=args.out, force=args.force, command=recorded_command("sweep.py", argv))

    def body() -> int:
        run_sweep(Sweep(cfg, tuple(args.tasks), args.metric), opts)
        return 0

    return guarded(body, f"the trained grid and finished tasks are kept; {go_on_hint(args.force, 'go on')}")


if __name__ == "__main__":
    run_script(main)

"""Train one autoencoder of the bake-off for several seeds at once and report mean ± std.

    python experiments/run.py --model=beta_vae --beta=2 --seeds=5
    python experiments/run.py --model=vanilla --dataset=digits --epochs=3
    python experiments/run.py --model=beta_vae --beta=0.5,1,2,4 --seeds=5   # seeds x betas, one program
    python experiments/run.py --model=denoising --noise-std=0.25,0.5 --lr=3e-4,1e-3 --seeds=3  # seeds x 2 x 2
    python experiments/run.py --model=beta_vae --beta=0.5,1,2,4 --seeds=16 --distributed   # every pod worker

Over several processes (--coordinator or --distributed), a process that is lost, or never joins within
--join-timeout, ends the run in every other one with a line naming it, the checkpoint kept and the command
that resumes; exit status 75 (docs/hosts.md: More than one host).

Expected (MNIST, full protocol, 5 seeds): test BCE near docs/protocol.md's published
single-run numbers, e.g. vanilla ~64, vae ~76. A run lands in runs/<dataset>/<name>; the committed
reference runs are in results/<dataset>/.
"""
from __future__ import annotations

import argparse
import os
import sys

from ae_jax.cli import (
    ArgParser, add_data_dir_arg, add_distributed_args, check_dataset, float_list, go_on_hint, guarded, join_processes,
    out_dir, recorded_command, run_script, supervised)


def parse(argv=None):
    from ae_jax.data import DATASETS
    from ae_jax.models import MODELS
    from ae_jax.models.hparams import TRACED
    from ae_jax.trainer import PRECISIONS
    from ae_jax.trainer.config import WIDTHS
    p = ArgParser(prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=f"one of {', '.join(MODELS)}")
    for t in TRACED:  # every traced hyperparameter: one value, or a comma list (a grid axis, same program)
        p.add_argument(t.flag, type=float_list, default=None,
                       help=t.help + "; a comma list (e.g. 0.5,1,2) trains every value in the same program")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default mnist)")
    add_data_dir_arg(p)
    p.add_argument("--latent-dim", type=int, default=None, help="latent size n (default 20; 2 with --anomaly)")
    p.add_argument("--anomaly", action="store_true", help="train on the anomaly split (no class 1), n = 2")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--loss", default="bce", help="reconstruction loss: bce (the protocol's) or mse")
    p.add_argument("--widths", default="protocol",
                   help=f"hidden widths: {' or '.join(WIDTHS)} (the n = 20 widths at every latent size)")
    p.add_argument("--precision", default="float32",
                   help=f"matmul precision, one of {', '.join(PRECISIONS)}: float32 gives the same numbers on "
                        "every platform; fast lets TPUs use bfloat16 passes and GPUs TF32")
    p.add_argument("--out", type=out_dir, default=None, help="run directory (default runs/<dataset>/<name>)")
    p.add_argument("--force", action="store_true", help="retrain even if the run is complete")
    add_distributed_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    status = supervised(os.path.abspath(__file__), argv)  # several processes: this one watches its worker
    if status is not None:
        return status
    args = parse(argv)
    from ae_jax.supervisor import resume_hint
    from ae_jax.trainer import ExperimentConfig, distributed, format_table, run_experiment
    from ae_jax.trainer.folder import REUSED, interrupted_note
    from ae_jax.trainer.config import run_dir_for
    from ae_jax.models.hparams import TRACED
    check_dataset(args.dataset)
    if join_processes(args):
        distributed.describe_run("run.py", resume_hint("run.py", list(sys.argv[1:] if argv is None else argv),
                                                       args.coordinator is not None, args.force))
    grid = {t.name: tuple(v) for t in TRACED if (v := getattr(args, t.flag[2:].replace("-", "_"))) is not None}
    cfg = ExperimentConfig(model=args.model, dataset=args.dataset, anomaly=args.anomaly,
                           latent_dim=args.latent_dim, seeds=args.seeds, first_seed=args.seed, grid=grid,
                           epochs=args.epochs, batch_size=args.batch_size, loss=args.loss, widths=args.widths,
                           precision=args.precision)
    command = recorded_command("run.py", argv)

    def body() -> int:
        metrics, run_dir = run_experiment(cfg, out=args.out, data_dir=args.data_dir, force=args.force,
                                          command=command)
        if not distributed.is_writer():  # one report, however many processes trained
            return 0
        print()
        print(format_table(metrics))
        if REUSED in metrics:  # numbers made earlier (maybe elsewhere): never passed off as this command's
            print(f"\nreused, not trained now: {run_dir} was made by {metrics[REUSED]}; nothing was written")
        else:
            print(f"\nwritten to {run_dir}")
        return 0

    def kept() -> str:
        if not distributed.is_writer():  # process 0 holds the run folder
            return "process 0 says what was kept"
        return interrupted_note(run_dir_for(cfg, args.out), go_on_hint(args.force))

    return guarded(body, kept)


if __name__ == "__main__":
    run_script(main)

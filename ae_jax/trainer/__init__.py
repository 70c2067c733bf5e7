"""The trainer: every run of an experiment (seeds x hyperparameters) in one compiled program.

    program.py  what is compiled: one epoch of training (a lax.scan over minibatches) and evaluation,
                each for one run; vmapped over runs by the loop
    loop.py     the host side: the run axis over every device, one dispatch per epoch, progress,
                orbax checkpoints and exact resume, batched evaluation
    memory.py   how many runs fit a device (XLA's memory analysis of the compiled program), and the
                one-line out-of-memory error that names that count
    config.py   one experiment's request (model, data, seeds x a grid of traced hyperparameters, settings)
                and its folder name
    provenance.py  config.json: where a run came from, and what makes two runs different
    folder.py   a run folder's lock and life, and every write into it (process 0's alone)
    results.py  metrics.json's content (mean ± std over seeds) and the closing table
    run.py      one experiment in one run folder: config, folder, training and results put together
    together.py  experiments of one program (models equal up to traced hyperparameters) trained together,
                each written to its own run folder
    distributed.py  more than one process (jax.distributed): joining, gathering, process 0 writes
"""
from .loop import (RunAxis, TrainOutput, epoch_memory, eval_memory, evaluate_runs, has_final_checkpoint,
                   load_final_state, map_runs, stack_hparams, train_runs)
from .memory import OutOfMemory
from .program import PRECISIONS, TrainConfig, TrainState, init_state, make_model, run_keys, spec_hparams
from .config import ConfigError, ExperimentConfig, get_model_or_error
from .folder import folder_lock
from .provenance import check_same_config
from .results import format_table
from .run import run_experiment

__all__ = ["ConfigError", "ExperimentConfig", "OutOfMemory", "PRECISIONS", "RunAxis", "TrainConfig", "TrainOutput",
           "TrainState", "check_same_config", "epoch_memory", "eval_memory", "evaluate_runs", "folder_lock",
           "format_table", "get_model_or_error",
           "has_final_checkpoint", "init_state", "load_final_state", "make_model", "map_runs", "run_experiment",
           "run_keys", "spec_hparams", "stack_hparams", "train_runs"]

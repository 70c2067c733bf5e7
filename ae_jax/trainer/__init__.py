"""The trainer: every run of an experiment (seeds x hyperparameters) in one compiled program.

    program.py  what is compiled: one epoch of training (a lax.scan over minibatches) and evaluation,
                each for one run; vmapped over runs by the loop
    loop.py     the host side: the run axis over every device, one dispatch per epoch, progress,
                orbax checkpoints and exact resume, batched evaluation
    memory.py   how many runs fit a device (XLA's memory analysis of the compiled program), and the
                one-line out-of-memory error that names that count
    run.py      one experiment in one run folder: its config and identity, locking, metrics.json
    distributed.py  more than one process (jax.distributed): joining, gathering, process 0 writes
    compile_cache.py  the persistent compilation cache the scripts turn on: a program is compiled once
"""
from .loop import (RunAxis, TrainOutput, epoch_memory, eval_memory, evaluate_runs, has_final_checkpoint,
                   load_final_state, map_runs, stack_hparams, train_runs)
from .memory import OutOfMemory
from .program import PRECISIONS, TrainConfig, TrainState, init_state, make_model, run_keys, spec_hparams
from .run import (ConfigError, ExperimentConfig, check_same_config, folder_lock, format_table, get_model_or_error,
                  run_experiment)

__all__ = ["ConfigError", "ExperimentConfig", "OutOfMemory", "PRECISIONS", "RunAxis", "TrainConfig", "TrainOutput",
           "TrainState", "check_same_config", "epoch_memory", "eval_memory", "evaluate_runs", "folder_lock",
           "format_table", "get_model_or_error",
           "has_final_checkpoint", "init_state", "load_final_state", "make_model", "map_runs", "run_experiment",
           "run_keys", "spec_hparams", "stack_hparams", "train_runs"]

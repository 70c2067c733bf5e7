"""ae_jax: autoencoder studies in JAX/Flax, every number as mean ± std over seeds.

Where things live:
    ae_jax/models/    the models: shared Flax modules, one module per bottleneck, the registry
    ae_jax/trainer/   the trainer: compiled programs, the loop over epochs and devices, run folders
    ae_jax/tasks/     the tasks a trained model is put through, one module each
    ae_jax/studies/   the studies: a plan of runs, its tasks and its report, on one driver
"""
__version__ = "0.2.0"

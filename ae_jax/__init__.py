"""ae_jax: autoencoder studies in JAX/Flax, every number as mean ± std over seeds.

Where things live:
    ae_jax/models/    the models: shared Flax modules, the losses, one module per bottleneck, and the registry
                      (each model's switches, defaults, display label and the original study's numbers)
    ae_jax/trainer/   the trainer: compiled programs, the loop over epochs and devices, run folders
    ae_jax/tasks/     the tasks a trained model is put through, one module each, with their helpers
                      (the reference classifier, sample-quality measures, label subsets, the UMAP pool)
    ae_jax/studies/   the studies: a plan of runs, its tasks and its report, on one driver
    ae_jax/explorer/  the latent explorer: one self-contained page that decodes in the browser
    ae_jax/data/      the datasets, their downloads and the protocol's splits
    ae_jax/cache/     the user cache folder and the compilation cache the scripts turn on
    ae_jax/cli/       what the scripts in experiments/ share: flags, one-line errors, Ctrl-C
    io.py, figures.py  files (atomic writes, JSON, mean ± std) and figures, used everywhere
"""
__version__ = "0.2.0"

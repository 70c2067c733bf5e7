"""The studies: each a plan of runs, the tasks it puts them through and the report it writes.

    driver.py   what every study shares: locking, config checks, training what is missing,
                resuming, running missing tasks, writing summary.json and the report
    report.py   report helpers: mean ± std cells, significance tests, provenance notes
    bakeoff.py  the bake-off (the first study)
    ae_vs_vae.py  plain AE, VAE and conditional VAE compared (docs/studies.md part A)
    latent_sweep.py  reconstruction error against the latent size, per digit (part A, claims 1-3)
    more_seeds.py  20 seeds of the models whose published numbers fell outside the bake-off's band

Adding a study: a module here with a ``Study`` subclass (its ``plan``,
``summarize`` and ``report``), a line in ``STUDIES``, and a thin entry point
in ``experiments/``.
"""
from .ae_vs_vae import AeVsVae
from .bakeoff import Bakeoff
from .driver import PlannedRun, RunResult, Study, StudyOptions, run_study
from .latent_sweep import LatentSweep
from .more_seeds import MoreSeeds

STUDIES = {"bakeoff": Bakeoff(), "ae_vs_vae": AeVsVae(), "latent_sweep": LatentSweep(),
           "more_seeds": MoreSeeds()}

__all__ = ["AeVsVae", "Bakeoff", "LatentSweep", "MoreSeeds", "PlannedRun", "RunResult", "STUDIES", "Study", "StudyOptions",
           "run_study"]

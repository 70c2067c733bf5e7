"""The studies: each a plan of runs, the tasks it puts them through and the report it writes.

    driver.py   what every study shares: locking, config checks, training what is missing,
                resuming, running missing tasks, writing summary.json and the report
    report.py   report helpers: mean ± std cells, significance tests, provenance notes
    bakeoff.py  the bake-off (the first study)

Adding a study: a module here with a ``Study`` subclass (its ``plan``,
``summarize`` and ``report``), a line in ``STUDIES``, and a thin entry point
in ``experiments/``.
"""
from .bakeoff import Bakeoff
from .driver import PlannedRun, RunResult, Study, StudyOptions, run_study

STUDIES = {"bakeoff": Bakeoff()}

__all__ = ["Bakeoff", "PlannedRun", "RunResult", "STUDIES", "Study", "StudyOptions", "run_study"]

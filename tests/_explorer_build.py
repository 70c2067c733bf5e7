"""One explorer folder per test session, built from tiny models (digits, n = 4, 2 seeds, 2 epochs).

Shared by test_explorer.py and test_explorer_browser.py: the first caller
trains and writes it (through the same functions experiments/explore.py calls),
later callers get the cached result. The folder is removed at exit.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

MODELS = ("vanilla", "vae")
LATENT = 4
SEEDS = 2
EPOCHS = 2


@functools.lru_cache(maxsize=1)
def explorer_build() -> dict:
    """{"out": folder, "trained": {model: TrainedModel}, "splits", "result": build_explorer's answer, "log": lines}."""
    from ae_jax.data import load_splits
    from ae_jax.explorer.study import build_explorer, trained_states

    root = Path(tempfile.mkdtemp(prefix="ae_jax_explorer_test_"))
    atexit.register(shutil.rmtree, root, True)
    splits = load_splits("digits")
    log: list[str] = []
    trained = trained_states(MODELS, "digits", LATENT, SEEDS, EPOCHS, root / "runs", splits=splits,
                             command="test", log=log.append)
    result = build_explorer(trained, splits, root / "explorer", command="test", dataset="digits",
                            take_screenshot=False, log=log.append)
    return {"out": root / "explorer", "root": root, "trained": trained, "splits": splits, "result": result,
            "log": log}

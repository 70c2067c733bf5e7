"""Where ae_jax keeps what it can make again: the user cache folder, and the scripts' caches of compiled code.

    __init__.py     the cache root and the one setting for the caches of compiled code; free of jax, because
                    the UMAP worker processes and the downloader read it too
    compilation.py  XLA's persistent compilation cache, which the scripts turn on: a program is compiled once

The caches of compiled code (XLA's programs: ``compilation``; umap's numba code: ``ae_jax.tasks.umap_pool``) share
``AE_JAX_COMPILATION_CACHE``: a folder for XLA's, or one of ``CACHE_OFF`` for neither. The downloaded datasets
(``ae_jax.data.download``) live under the same root.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

COMPILATION_CACHE_ENV = "AE_JAX_COMPILATION_CACHE"
CACHE_OFF = ("off", "0", "no", "none", "false")


def compilation_cache_off() -> bool:
    """Whether ``AE_JAX_COMPILATION_CACHE`` turns the caches of compiled code off."""
    return os.environ.get(COMPILATION_CACHE_ENV, "").strip().lower() in CACHE_OFF


def user_cache_root() -> Path:
    """The platform's per-user cache folder plus ``ae_jax``."""
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(home / "Library" / "Caches")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = xdg if os.path.isabs(xdg) else str(home / ".cache")  # the XDG spec ignores relative paths
    return Path(base) / "ae_jax"

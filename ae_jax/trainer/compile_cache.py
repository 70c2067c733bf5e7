"""A persistent XLA compilation cache for the scripts: each distinct program is compiled once.

A study compiles the very same program again and again: the probe of every
model with the same encoder widths, the evaluation of the beta-VAEs and the
VAE, each run's parameter initialisation. In a small digits bake-off
(``--seeds=2 --epochs=3``, figures in ``benchmarks/README.md``) XLA
compilation took 296 s of the 498 s wall-clock; with an empty cache 34
programs were loaded instead (86 s saved), with a filled one 198 s were saved.
On an accelerator, where the training itself takes seconds, compilation's
share is larger.

JAX's persistent compilation cache keys an executable on the program's
content (with the jax version, the backend, the devices and the compile
options), so an identical program, in the same study or a later one, is
loaded instead of compiled. A loaded executable is the one the compiler made
for that program, so the numbers are the same as after a fresh compile.

The setting is the environment variable ``AE_JAX_COMPILATION_CACHE``: a
folder, or ``off`` (which also leaves umap's numba code compiled in every
process: ``ae_jax.umap_pool``). Unset, the folder is
``<user cache>/ae_jax/xla`` (the user cache of ``ae_jax.download``). A cache
set with JAX's own setting (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``)
is left as it is. The folder
is capped at ``MAX_BYTES``; the least recently used programs go first. The
cap also makes JAX lock the folder around each read and write, so studies
running side by side share it safely (JAX needs ``filelock`` for both;
without it the folder is neither capped nor locked). A
folder that cannot be made is reported on one line and the work goes on
uncached: the cache only saves time.

The scripts turn it on (``ae_jax.cli.guarded``); importing the package
changes no global setting. Programs that took ``MIN_COMPILE_S`` or more to
compile are stored, a tenth of JAX's own threshold of a second. Of the 544
programs of the digits bake-off above, about 400 compile in under 0.1 s (11 s
together): single operations, not worth a file each. Some 60 more take 0.1 to
1 s (evaluations on each data size, parameter initialisations), and under
JAX's threshold every later run compiled them again: with a filled cache,
storing them too leaves 21 s of compiling instead of 42 to 43 s (figures in
``benchmarks/README.md``). A threshold set with JAX's own
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is kept.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import jax

from ..download import COMPILATION_CACHE_ENV as ENV, compilation_cache_off, user_cache_root

MAX_BYTES = 2 << 30  # 2 GiB; the digits bake-off of benchmarks/README.md stored 9.1 MB
MIN_COMPILE_S = 0.1  # seconds; JAX's default stores only the programs that took a second or more
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # JAX's own setting, kept when given

# What this process has compiled so far, from JAX's monitoring events: programs asked for (compiled or
# loaded), their seconds, how many were loaded from the persistent cache, and the compile time that saved.
_tally = {"programs": 0, "seconds": 0.0, "loaded": 0, "saved_s": 0.0}


def _on_event(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _tally["loaded"] += 1


def _on_duration(event: str, seconds: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":  # every program, compiled or loaded
        _tally["programs"] += 1
        _tally["seconds"] += seconds
    elif event == "/jax/compilation_cache/compile_time_saved_sec":
        _tally["saved_s"] += seconds


jax.monitoring.register_event_listener(_on_event)
jax.monitoring.register_event_duration_secs_listener(_on_duration)


def tally() -> dict:
    """{"programs", "seconds", "loaded", "saved_s"} so far in this process (a copy)."""
    return dict(_tally)


def hits() -> int:
    """Programs this process has loaded from the persistent cache so far."""
    return _tally["loaded"]


def describe(since: dict) -> str:
    """One line on the compiling done after the `since` tally."""
    d = {k: v - since[k] for k, v in _tally.items()}
    line = f"compilation: {d['programs']} XLA programs, {d['seconds']:.0f} s"
    if in_use():
        line += f"; {d['loaded']} loaded from the compilation cache"
        if d["loaded"]:
            line += f" ({_saving(d['saved_s'])})"
    return line


def _saving(saved_s: float) -> str:
    """JAX's saved time is each loaded program's compile time less its load time, so it can be below zero."""
    if saved_s >= 0.5:
        return f"saving {saved_s:.0f} s of compiling"
    if saved_s > -0.5:
        return "saving under a second of compiling"
    return f"loading took {-saved_s:.0f} s longer than compiling would have"


# On an NVIDIA GPU, XLA by default also generates matrix-product kernels with Triton and autotunes them
# against cuBLAS's, program by program. Measured on one H200 (jax 0.11.2, benchmarks/README.md): the 5-seed
# vanilla model's epoch program compiled in 46.7 s (35.1 s at 1 seed), against 4.2 s (2.5 s) with Triton's
# GEMMs off, while training ran as fast (2.8 to 3.0 million seed-samples/s at 5 seeds either way): the
# autotuning was most of a study's compiling and bought nothing for these small layers. The scripts
# therefore turn it off where JAX's CUDA plugin is installed, unless XLA_FLAGS already says either way.
TRITON_GEMM = "xla_gpu_enable_triton_gemm"
TRITON_GEMM_OFF = f"--{TRITON_GEMM}=false"


def _cuda_plugin_installed() -> bool:
    """Whether JAX's CUDA plugin is installed (``jax_plugins.xla_cuda<N>``), found without starting a backend."""
    import importlib.util
    import pkgutil
    spec = importlib.util.find_spec("jax_plugins")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(m.name.startswith("xla_cuda") for m in pkgutil.iter_modules(spec.submodule_search_locations))


def quick_gpu_gemms(environ: dict | None = None, cuda: Callable[[], bool] | None = None) -> bool:
    """Add ``--xla_gpu_enable_triton_gemm=false`` to XLA_FLAGS where the CUDA plugin is installed (see above).

    Must run before the backend starts (XLA reads XLA_FLAGS once). Left alone when XLA_FLAGS mentions the
    flag already (``--xla_gpu_enable_triton_gemm=true`` keeps XLA's default). True when the flag was added.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if TRITON_GEMM in flags or not (cuda or _cuda_plugin_installed)():
        return False
    environ["XLA_FLAGS"] = f"{flags} {TRITON_GEMM_OFF}".strip()
    return True


def folder_setting() -> Path | None:
    """The folder ``AE_JAX_COMPILATION_CACHE`` asks for (default: the user cache's), or None for ``off``."""
    if compilation_cache_off():
        return None
    value = os.environ.get(ENV, "").strip()
    if value:
        return Path(value).expanduser()
    return user_cache_root() / "xla"


def in_use() -> str | None:
    """The folder of this process's persistent compilation cache, or None when there is none."""
    return jax.config.jax_compilation_cache_dir or None


def enable() -> str | None:
    """Turn the persistent cache on for this process, unless JAX's own setting already names a folder.

    Returns the folder in use, or None (``off``, or a folder that cannot be made: one line on stderr).
    """
    if in_use():
        return in_use()
    folder = folder_setting()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        print(f"note: no compilation cache ({folder}: {e.strerror or e}); every program is compiled afresh. "
              f"Set {ENV} to a writable folder, or to off.", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if MIN_COMPILE_ENV not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    try:
        import filelock  # noqa: F401 - JAX needs it to cap the folder
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    except ImportError:
        pass  # uncapped rather than uncached
    return str(folder)

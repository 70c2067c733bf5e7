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
process: ``ae_jax.tasks.umap_pool``). Unset, the folder is
``<user cache>/ae_jax/xla`` (the user cache of ``ae_jax.data.download``). A cache set with
JAX's own setting (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is left as
it is. A folder that cannot be made is reported on one line and the work goes
on uncached: the cache only saves time.

Size, and studies side by side. The folder is kept under ``MAX_BYTES`` by
``prune``, once when a script starts: the entries used longest ago (by the
files' access times where the filesystem keeps them, else the oldest written)
go first. JAX's own cap (``jax_compilation_cache_max_size``) is left off on
purpose: with it, JAX locks the folder and reads every entry's size and access
time on each program it stores, which costs more the fuller the folder is.
Measured on this 2-core VM with ``benchmarks/cache_folder.py`` (60 small
programs stored, 2026-12-04): 4.2 s with
the folder empty either way; with 1 000 entries in it, 13.9 s capped against
4.4 s uncapped; with 3 000, 29.9 s against 3.9 s: 0.4 s more for each program
stored, and a study stores a hundred or more. Without the cap JAX writes an
entry in place and reads it without a lock, so a study running beside another
one can read an entry the other is still writing. Such an entry cannot be
decompressed, and JAX compiles that program afresh, which is all a cache could
do; the scripts keep JAX's warning about it (``DAMAGED_ENTRY_WARNING``) out of
their output. A cap set with JAX's own ``JAX_COMPILATION_CACHE_MAX_SIZE`` is
kept.

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

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import jax

from . import COMPILATION_CACHE_ENV as ENV, compilation_cache_off, user_cache_root

MAX_BYTES = 2 << 30  # 2 GiB; the digits bake-off of benchmarks/README.md stored 9.1 MB
ENTRY_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"  # JAX's file of a program, and its access time where capped
# the start of JAX's warning on an entry it cannot read (a UserWarning from jax._src.compiler)
DAMAGED_ENTRY_WARNING = "Error reading persistent compilation cache entry"
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


def prune(folder, max_bytes: int = MAX_BYTES) -> int:
    """Remove the entries used longest ago until the folder holds at most `max_bytes` of them; how many went.

    An entry is JAX's ``<key>-cache`` file, with its ``<key>-atime`` file where a capped JAX left one. Its
    age is the later of the file's access and modification times (access times only where the filesystem
    keeps them). Files another process removes or holds meanwhile are passed over: the cache only saves time.
    """
    entries = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.endswith(ENTRY_SUFFIX) and e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    entries.append((max(st.st_atime_ns, st.st_mtime_ns), e.path, st.st_size))
    except OSError:
        return 0
    total = sum(size for _, _, size in entries)
    removed = 0
    for _, path, size in sorted(entries):
        if total <= max_bytes:
            break
        for p in (path, path[:-len(ENTRY_SUFFIX)] + ATIME_SUFFIX):
            with contextlib.suppress(OSError):
                os.remove(p)
        total -= size
        removed += 1
    return removed


def enable() -> str | None:
    """Turn the persistent cache on for this process, unless JAX's own setting already names a folder.

    Returns the folder in use, or None (``off``, or a folder that cannot be made: one line on stderr). A
    folder of its own is pruned to ``MAX_BYTES`` first (``prune``). Either way, JAX's warning about an entry
    it cannot read (one another process is still writing) is kept from the output: see the module's notes.
    """
    if in_use():
        _quiet_damaged_entries()
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
    prune(folder)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if MIN_COMPILE_ENV not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    _quiet_damaged_entries()
    return str(folder)


def _quiet_damaged_entries() -> None:
    warnings.filterwarnings("ignore", message=DAMAGED_ENTRY_WARNING, category=UserWarning)

"""Files: where runs go, atomic writes, JSON that holds no NaN, and mean ± std over seeds."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np


# Where every script writes by default: a user's own runs, git-ignored. The committed reference results live in
# results/<dataset>/ and are written there only when a command names it (--out=results/<dataset>...).
RUNS_ROOT = Path("runs")


@functools.cache
def new_file_mode() -> int:
    """The mode a plain new file gets under this process's umask (0o644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it.

    The file gets the mode any new file would (``mkstemp`` alone makes it readable by its owner only, which
    would lock colleagues out of a shared results folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_npz(path, **arrays) -> None:
    """Named numpy arrays, compressed, written atomically (np.load(path) reads them back)."""
    import io as _io
    buf = _io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def clean_json(obj: Any) -> Any:
    """numpy -> python, non-finite floats -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(clean_json(obj), indent=1) + "\n")


@contextlib.contextmanager
def stderr_silenced():
    """Point the process's stderr (file descriptor 2, so C++ writes too) at the null device meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class DamagedFile(ValueError):
    """A results file (JSON, checkpoint) that exists but cannot be read; the message says what to do.

    A ValueError, as ``json.JSONDecodeError`` is: code that treats an unparsable file as absent still does."""


METRICS_KEYS = ("groups", "timing", "device", "diverged")  # what a run's metrics.json always holds
TASK_KEYS = ("seeds", "metrics")  # ... and a task's tasks/<task>.json


def read_json(path, keys: Sequence[str] | None = None) -> Any:
    """A JSON file's content. ``keys`` (a sequence, even empty): it must be an object holding those keys, as
    the file ae_jax writes there is; anything else is ``DamagedFile`` (one line) rather than a later traceback."""
    again = "delete its run folder, or rerun with --force, to make it again"
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFile(f"{path} is not valid JSON ({e}): a damaged or half-written file; {again}") from None
    if keys is not None:
        missing = [k for k in keys if not isinstance(value, dict) or k not in value]
        if not isinstance(value, dict) or missing:
            what = "an object" if not isinstance(value, dict) else f"no {', '.join(map(repr, missing))}"
            raise DamagedFile(f"{path} is valid JSON but not the file ae_jax writes there ({what}): replaced or "
                              f"edited by hand; {again}")
    return value


def aggregate(values: Sequence[float]) -> dict:
    """{"values", "mean", "std", "n"} over the finite values; std is the sample std (ddof 1).

    Non-finite values stay in "values" (as null) but are left out of mean and
    std, and "n" counts only what was averaged; std is null below two values.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    return {"values": [float(x) for x in v],
            "mean": float(ok.mean()) if ok.size else float("nan"),
            "std": float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
            "n": int(ok.size)}


def fmt_mean_std(m: dict, digits: int = 4) -> str:
    mean, std = m.get("mean"), m.get("std")
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "n/a"
    s = f"{mean:.{digits}g}"
    if std is not None and math.isfinite(std):
        s += f" ± {std:.2g}"
    return s

"""Fetch the MNIST-like IDX files from the network into a cache folder, verified.

``fetch(name)`` makes sure ``cache_dir(name)`` holds the four IDX ``.gz`` files of
``name`` (mnist, fashion_mnist or kmnist) and returns that folder. A file is
fetched only when it is not already there, from each mirror of ``mirrors(name)``
in turn, and is kept only if it matches a pinned SHA-256 digest:

* ``DIGESTS[name][file] = (gz, raw)``: ``gz`` is the SHA-256 of the ``.gz`` file
  as its publisher serves it, ``raw`` the SHA-256 of its uncompressed content
  (None where unknown). A file is accepted when its own digest equals ``gz`` or
  its uncompressed content's digest equals ``raw``. The ``raw`` pin accepts the
  same data recompressed (gzip output depends on the compressor and its header
  holds a file name and a time stamp), e.g. a mirror that recompressed it.
* mnist: ``gz`` as published for the CVDF and OSSCI mirrors of the original
  files, ``raw`` from the original files.
* fashion_mnist: ``gz`` as published for the Zalando bucket; ``raw`` computed from
  Debian's ``dataset-fashion-mnist`` files, whose ``.gz`` differ from Zalando's
  only by the stored file name in the gzip header (their sizes differ by exactly
  that name's length plus its terminating byte).
* kmnist: ``gz`` as published for the CODH files; no ``raw`` pin is known, so a
  recompressed KMNIST file is refused.

A download is written to a temporary file beside its target, verified, then
renamed onto the target: a partial or corrupt download never becomes a cached
file (the temporary file is deleted). Each attempt uses a connect/read timeout of
``TIMEOUT_S`` seconds; a mirror that cannot be reached at all is not tried again
for the other files, so without a network ``fetch`` gives up within a few
timeouts. Progress goes to stderr: a bar on a terminal, one line per file
otherwise.

The cache folder is ``$AE_JAX_DATA_DIR/<name>`` when that variable is set, else
``<user cache>/ae_jax/<name>``, where the user cache is ``$XDG_CACHE_HOME`` or
``~/.cache`` on Linux, ``~/Library/Caches`` on macOS and ``%LOCALAPPDATA%`` on
Windows. The mirrors can be replaced with the ``AE_JAX_MIRRORS`` environment
variable: base URLs separated by spaces or commas, in which ``{name}`` stands for
the dataset's name; set but empty, it turns downloading off.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from ..cache import user_cache_root
from ..io import new_file_mode
from .sources import ENV_DATA_DIR, IDX_FILES, DataError

ENV_MIRRORS = "AE_JAX_MIRRORS"
TIMEOUT_S = 5.0
CHUNK = 1 << 16

# Base URLs, tried in order; a file's URL is the base plus its IDX_FILES name.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "kmnist": [
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ],
}

# {dataset: {file: (SHA-256 of the .gz as published, SHA-256 of its uncompressed content or None)}}
DIGESTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                       "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                       "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                      "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                      "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                      "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                      "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    "kmnist": {
        "train-images-idx3-ubyte.gz": ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", None),
        "train-labels-idx1-ubyte.gz": ("e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", None),
        "t10k-images-idx3-ubyte.gz": ("edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", None),
        "t10k-labels-idx1-ubyte.gz": ("20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", None),
    },
}


class DownloadError(DataError):
    """No mirror gave a verified copy of a file; the message says why (one line)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------- places
def cache_dir(name: str) -> Path:
    """Where ``fetch(name)`` keeps the files: ``$AE_JAX_DATA_DIR/<name>``, else the user cache's."""
    root = os.environ.get(ENV_DATA_DIR)
    return (Path(root).expanduser() if root else user_cache_root()) / name


def mirrors(name: str) -> list[str]:
    """Base URLs for ``name``, in the order tried: ``$AE_JAX_MIRRORS`` if set, else ``MIRRORS[name]``."""
    env = os.environ.get(ENV_MIRRORS)
    bases = env.replace(",", " ").split() if env is not None else MIRRORS.get(name, [])
    return [b.replace("{name}", name).rstrip("/") + "/" for b in bases]


# --------------------------------------------------------------------- checks
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_gunzip(path: Path) -> str | None:
    """SHA-256 of the uncompressed content, or None when ``path`` is no complete gzip stream."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def verify(path: Path, name: str, filename: str) -> bool:
    """True iff ``path`` is the published ``filename`` of ``name`` (by either pinned digest)."""
    gz, raw = DIGESTS[name][filename]
    if _sha256_file(path) == gz:
        return True
    return raw is not None and _sha256_gunzip(path) == raw


# ------------------------------------------------------------------- progress
class _Progress:
    """A text progress bar on stderr; without a terminal, a line when a file starts and one when it ends."""

    def __init__(self, url: str, total: int | None):
        self.url, self.total, self.done = url, total, 0
        self.tty = sys.stderr.isatty()
        if not self.tty:
            print(f"downloading {url}", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.tty:
            return
        mb = self.done / 1e6
        if self.total:
            frac = min(self.done / self.total, 1.0)
            text = f"downloading {self.url} [{'#' * int(30 * frac):<30}] {mb:.1f}/{self.total / 1e6:.1f} MB"
        else:
            text = f"downloading {self.url} {mb:.1f} MB"
        sys.stderr.write("\r" + text)
        sys.stderr.flush()

    def close(self, outcome: str) -> None:
        line = f"{self.url}: {outcome} ({self.done / 1e6:.1f} MB)"
        sys.stderr.write(("\r" + line + " " * 30 if self.tty else line) + "\n")
        sys.stderr.flush()


# ------------------------------------------------------------------- download
class _Unreachable(Exception):
    """The mirror could not be reached (no network, refused, timed out): skip it from now on."""


def _download_one(url: str, target: Path, name: str, filename: str) -> None:
    """Download ``url`` to ``target`` atomically; raise ValueError (bad file) or _Unreachable.

    Nothing is created before the server answers; the bytes go to a temporary
    file beside ``target`` that becomes ``target`` only once verified.
    """
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:  # reached, but it has no such file
        raise ValueError(f"HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Unreachable(_one_line(getattr(e, "reason", e)) or type(e).__name__) from None
    with response:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        tmp = Path(tmp)
        os.chmod(tmp, new_file_mode())  # a shared data folder stays readable to others, as any new file would be
        length = response.headers.get("Content-Length")
        progress = _Progress(url, int(length) if length and length.isdigit() else None)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        progress.update(len(block))
                except (OSError, http.client.HTTPException) as e:  # e.g. a timeout mid-transfer
                    raise ValueError(f"transfer broke off ({_one_line(e) or type(e).__name__})") from None
                out.flush()
                os.fsync(out.fileno())
            if not verify(tmp, name, filename):
                raise ValueError("its SHA-256 matches neither pinned digest (corrupt or not the published file)")
            os.replace(tmp, target)
            progress.close("ok, SHA-256 verified")
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            progress.close(f"failed: {_one_line(e)}" if isinstance(e, ValueError) else "failed")
            raise


def _remove_empty_dirs(folder: Path, keep: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``keep`` while they are empty."""
    while folder != keep and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def fetch(name: str) -> Path:
    """Make ``cache_dir(name)`` hold ``name``'s four verified IDX files; return the folder.

    Files already there are kept as they are (they were verified when written).
    Raise DownloadError (one line) if a file cannot be had from any mirror.
    """
    if name not in DIGESTS:
        raise DataError(f"no download known for dataset {name!r}")
    folder = cache_dir(name)
    missing = [f for f in IDX_FILES.values() if not (folder / f).is_file()]
    bases = mirrors(name)
    if missing and not bases:
        raise DownloadError(f"{name} is not in {folder} and downloading is turned off ({ENV_MIRRORS} is empty)")
    dead: dict[str, str] = {}  # base URL -> why it could not be reached
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # folders above it are not ours
    for filename in missing:
        target = folder / filename
        problems = []
        for base in bases:
            if base in dead:
                continue
            try:
                _download_one(base + filename, target, name, filename)
                break
            except _Unreachable as e:
                dead[base] = str(e)
                problems.append(f"{base} unreachable ({e})")
            except ValueError as e:
                problems.append(f"{base + filename}: {e}")
        else:
            _remove_empty_dirs(folder, keep=existing)
            tried = "; ".join(problems) or "; ".join(f"{b} unreachable ({why})" for b, why in dead.items())
            raise DownloadError(f"could not download {name}'s {filename}: {tried}")
    return folder

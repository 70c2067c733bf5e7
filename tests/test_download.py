"""Automatic download of the IDX files: served from loopback, verified, cached, atomic."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from _helpers import MNIST_DIR
from ae_jax.data import download
from ae_jax.data import loading as data
from ae_jax.data import IDX_FILES, DataError, load_idx_dir, load_raw

needs_mnist = pytest.mark.skipif(not all((MNIST_DIR / f).is_file() for f in IDX_FILES.values()),
                                 reason=f"MNIST IDX files not found in {MNIST_DIR}")


# ------------------------------------------------------------------ a local mirror
class Mirror:
    """An HTTP server on 127.0.0.1 serving ``files`` (name -> bytes) and counting requests."""

    def __init__(self, files: dict[str, bytes], truncate_transfer: bool = False):
        self.files, self.requests = files, []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # a transfer that breaks off: the promised length, half the bytes, then the connection closes
                self.wfile.write(body[: len(body) // 2] if truncate_transfer else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def mnist_files() -> dict[str, bytes]:
    return {f: (MNIST_DIR / f).read_bytes() for f in IDX_FILES.values()}


def wrong_but_well_formed() -> dict[str, bytes]:
    """Valid gzip'd IDX files of the right shapes, holding zeros: only the digest can tell."""
    shapes = {"train-images-idx3-ubyte.gz": (60000, 28, 28), "train-labels-idx1-ubyte.gz": (60000,),
              "t10k-images-idx3-ubyte.gz": (10000, 28, 28), "t10k-labels-idx1-ubyte.gz": (10000,)}
    return {f: gzip.compress(data.idx_bytes(np.zeros(s, np.uint8))) for f, s in shapes.items()}


@pytest.fixture
def mirrors(monkeypatch):
    """Start mirrors with ``start(files, ...)``; ``use(*urls)`` makes them the only ones tried."""
    started = []

    class Control:
        def start(self, files, **kw):
            m = Mirror(files, **kw)
            started.append(m)
            return m

        def use(self, *urls):
            monkeypatch.setenv(download.ENV_MIRRORS, " ".join(urls))

    yield Control()
    for m in started:
        m.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache; no AE_JAX_DATA_DIR; TFDS out of the way."""
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(download, "user_cache_root", lambda: tmp_path / "usercache" / "ae_jax")
    monkeypatch.setattr(data, "_tfds_usable", lambda: False)
    return tmp_path / "usercache" / "ae_jax"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------ the tests
@needs_mnist
def test_files_land_in_the_cache_load_and_a_second_load_stays_offline(cache, mirrors, capsys):
    server = mirrors.start(mnist_files())
    mirrors.use(server.url)
    raw = load_raw("mnist")
    expected = load_idx_dir(MNIST_DIR)
    for key in IDX_FILES:
        np.testing.assert_array_equal(getattr(raw, key), getattr(expected, key))
    assert raw.source == f"download:{(cache / 'mnist').absolute()}"
    assert files_under(cache) == sorted(f"mnist/{f}" for f in IDX_FILES.values())  # no temporary files left
    assert sorted(server.requests) == sorted(f"/{f}" for f in IDX_FILES.values())
    err = capsys.readouterr().err
    assert err.count("SHA-256 verified") == 4 and server.url in err  # one line per file when not a terminal
    # the split records its source
    assert data.make_splits(raw, "mnist").source == raw.source

    again = load_raw("mnist")
    assert len(server.requests) == 4  # served from the cache
    assert again.source == raw.source
    np.testing.assert_array_equal(again.train_images, raw.train_images)


@needs_mnist
def test_a_corrupt_mirror_is_followed_by_the_next(cache, mirrors):
    bad, good = mirrors.start(wrong_but_well_formed()), mirrors.start(mnist_files())
    mirrors.use(bad.url, good.url)
    raw = load_raw("mnist")
    assert len(bad.requests) == 4 and len(good.requests) == 4
    assert raw.train_labels.shape == (60000,) and raw.source.startswith("download:")
    for f in IDX_FILES.values():
        assert download.verify(cache / "mnist" / f, "mnist", f)


@pytest.mark.parametrize("truncate_transfer", [False, True], ids=["wrong_bytes", "transfer_breaks_off"])
def test_corrupt_mirrors_leave_no_cached_file_and_one_line_error(cache, mirrors, truncate_transfer):
    if truncate_transfer:
        files = {f: b"\x1f\x8b" + bytes(range(256)) * 64 for f in IDX_FILES.values()}
    else:
        files = wrong_but_well_formed()
    first, second = mirrors.start(files, truncate_transfer=truncate_transfer), mirrors.start(files)
    mirrors.use(first.url, second.url)
    with pytest.raises(DataError) as err:
        load_raw("mnist")
    message = str(err.value)
    assert "\n" not in message
    assert first.url in message and second.url in message  # both mirrors were tried
    assert "--data-dir" in message and data.ENV_DATA_DIR in message and "--dataset=digits" in message
    assert (first.requests, second.requests) == (["/train-images-idx3-ubyte.gz"], ["/train-images-idx3-ubyte.gz"])
    assert not cache.exists()  # no file, no temporary file, no empty folder


@needs_mnist
def test_an_unreachable_mirror_is_skipped_and_not_retried(cache, mirrors, monkeypatch):
    dead = closed_port_url()
    server = mirrors.start(mnist_files())
    mirrors.use(dead, server.url)
    opened = []
    real_urlopen = download.urllib.request.urlopen
    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda url, timeout: opened.append(url) or real_urlopen(url, timeout=timeout))
    raw = load_raw("mnist")
    assert raw.source.startswith("download:")
    assert [u for u in opened if u.startswith(dead)] == [dead + IDX_FILES["train_images"]]  # tried once only
    assert len(server.requests) == 4


def test_no_reachable_mirror_gives_the_one_line_error(cache, mirrors):
    dead1, dead2 = closed_port_url(), closed_port_url()
    mirrors.use(dead1, dead2)
    with pytest.raises(DataError) as err:
        load_raw("kmnist")
    message = str(err.value)
    assert "\n" not in message and "unreachable" in message and dead1 in message and dead2 in message
    assert "--data-dir" in message and "--dataset=digits" in message
    assert not cache.exists()


def test_downloads_go_to_ae_jax_data_dir_when_it_is_set(tmp_path, mirrors, monkeypatch):
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path / "mine"))
    files = {f: gzip.compress(b"x") for f in IDX_FILES.values()}
    monkeypatch.setitem(download.DIGESTS, "mnist",
                        {f: (hashlib.sha256(b).hexdigest(), None) for f, b in files.items()})
    mirrors.use(mirrors.start(files).url)
    assert download.cache_dir("mnist") == tmp_path / "mine" / "mnist"
    assert download.fetch("mnist") == tmp_path / "mine" / "mnist"
    assert files_under(tmp_path / "mine") == sorted(f"mnist/{f}" for f in IDX_FILES.values())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(data.ENV_DATA_DIR, "~/mine")
    assert download.cache_dir("mnist") == tmp_path / "mine" / "mnist"


def test_an_empty_mirror_list_turns_downloading_off_but_keeps_the_cache(cache, monkeypatch):
    monkeypatch.setenv(download.ENV_MIRRORS, "")
    assert download.mirrors("mnist") == []
    with pytest.raises(download.DownloadError, match="turned off"):
        download.fetch("kmnist")
    for f in IDX_FILES.values():  # a complete cache needs no mirror
        (cache / "kmnist").mkdir(parents=True, exist_ok=True)
        (cache / "kmnist" / f).write_bytes(b"")
    assert download.fetch("kmnist") == cache / "kmnist"


def test_mirror_list_from_the_environment(monkeypatch):
    monkeypatch.setenv(download.ENV_MIRRORS, "http://127.0.0.1:1/{name}, http://127.0.0.1:2/x/")
    assert download.mirrors("kmnist") == ["http://127.0.0.1:1/kmnist/", "http://127.0.0.1:2/x/"]
    monkeypatch.delenv(download.ENV_MIRRORS)
    assert download.mirrors("fashion_mnist") == download.MIRRORS["fashion_mnist"]


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/ae_jax"),
    ("linux", {"XDG_CACHE_HOME": "relative/ignored"}, "{home}/.cache/ae_jax"),
    ("linux", {}, "{home}/.cache/ae_jax"),
    ("darwin", {"XDG_CACHE_HOME": "/xdg"}, "{home}/Library/Caches/ae_jax"),
    ("win32", {"LOCALAPPDATA": "/appdata"}, "/appdata/ae_jax"),
])
def test_user_cache_root_per_platform(tmp_path, monkeypatch, platform, env, expected):
    for var in ("XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    assert download.user_cache_root() == Path(expected.format(home=tmp_path))


@needs_mnist
def test_verify_accepts_the_published_data_recompressed_and_nothing_else(tmp_path):
    name = IDX_FILES["test_labels"]
    content = gzip.decompress((MNIST_DIR / name).read_bytes())
    recompressed = tmp_path / "recompressed.gz"
    recompressed.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    assert hashlib.sha256(recompressed.read_bytes()).hexdigest() != download.DIGESTS["mnist"][name][0]
    assert download.verify(recompressed, "mnist", name)  # by the digest of the uncompressed content
    changed = bytearray(content)
    changed[-1] ^= 1
    recompressed.write_bytes(gzip.compress(bytes(changed)))
    assert not download.verify(recompressed, "mnist", name)
    recompressed.write_bytes(b"not gzip")
    assert not download.verify(recompressed, "mnist", name)

"""Shared fixtures: the digits data and a small slice of it.

Speed: most of the suite's time is XLA compilation of the epoch programs, and
many tests compile the very same program (seed 3 alone and seed 7 alone, the
interrupted and the resumed run, ...). A persistent compilation cache in a
temporary folder, fresh for every session, makes each identical program
compile once; the CLI subprocesses share it through the environment
(_helpers.subprocess_env). The scripts' own cache
(``AE_JAX_COMPILATION_CACHE``) points at the same folder, never the user's.
And LLVM compiles at optimisation level 1 (_helpers.SUITE_XLA_FLAGS), which
computes the same in about 40 % less time.

Parallel: pytest-xdist runs the test files in worker processes (``-n auto
--dist loadgroup`` in pyproject.toml, a group per file: see
pytest_collection_modifyitems), a whole file in one worker, so module
fixtures are built once. The workers share the one compilation cache folder
(without JAX's size cap, so without its lock: an entry read while another
worker still writes it is compiled afresh, ae_jax/cache/compilation.py).
``auto`` is the CPU count, at most MAX_WORKERS, to bound memory: every worker
is a JAX process of its own, and some tests start several more. More would
help little: the longest file alone is about a fifth of the serial time
(test_train, 156 of 841 worker-seconds on 2026-12-05).

Rank promotion: the whole suite runs with ``jax_numpy_rank_promotion="raise"``,
so an accidental broadcast in the package fails loudly.

No skips in CI: with ``AE_JAX_TESTS_NO_SKIP=1`` (set by ``.ci/run``, which
installs everything the tests need) a session with any skipped test fails, so a
browser, MNIST copy or tensorflow that went missing cannot turn into a green run
that tested less. Skip reasons are always listed (``-rs`` in pyproject.toml).

No downloads: ``AE_JAX_MIRRORS`` is set empty for the whole suite (and the CLI
subprocesses, which inherit it), so no test reaches the network or fills the
user's cache; tests/test_download.py serves its own mirrors on 127.0.0.1.
"""
from __future__ import annotations

import gc
import os
import shutil
import time

import jax
import pytest

from _helpers import CACHE_CONFIG, CACHE_DIR, MADE_CACHE_DIR, SUITE_XLA_FLAGS

# before any test starts a backend (which reads XLA_FLAGS once), beside any flags of the caller's; the workers
# inherit it
if SUITE_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SUITE_XLA_FLAGS}".strip()

for _opt, _val in CACHE_CONFIG.items():
    try:
        jax.config.update(_opt, _val)
    except (AttributeError, KeyError, ValueError):  # an older jax without the option: only slower
        pass


jax.config.update("jax_numpy_rank_promotion", "raise")

os.environ["AE_JAX_MIRRORS"] = ""
os.environ["AE_JAX_COMPILATION_CACHE"] = CACHE_DIR  # a script started with this environment: not the user's cache


MAX_WORKERS = 4


# Files that build the same things, which share a worker and run one after the other there, rather than
# build them twice at once on two workers: test_latent_sweep trains four runs of test_ae_vs_vae's study
# (the same models, code sizes, loss, seeds and epochs on digits), whose programs it then finds in the
# compilation cache; test_explorer_browser reads the explorer folder test_explorer built in that process.
# pytest-xdist shows each test with its group ("tests/test_cli.py::test_x@test_cli"): to rerun one, leave out
# the "@..." part.
SAME_WORKER_AS = {"test_latent_sweep": "test_ae_vs_vae", "test_explorer_browser": "test_explorer"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        stem = item.path.stem
        item.add_marker(pytest.mark.xdist_group(SAME_WORKER_AS.get(stem, stem)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        # An xdist worker reports that it has finished before pytest's own last clean-up, which runs gc.collect()
        # five times; over a worker's heap (JAX's programs, TensorFlow's modules) that can outlast the 5 s the
        # controller then waits before it interrupts the worker (a KeyboardInterrupt printed after the last
        # test). One collection now, while the controller still waits, and freezing what survives leave them
        # next to nothing to traverse.
        gc.collect()
        gc.freeze()
        return
    if os.environ.get("AE_JAX_TESTS_NO_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == pytest.ExitCode.OK:  # an interrupt or a failure says more
        reporter.write("\n")
        reporter.write_sep("=", f"AE_JAX_TESTS_NO_SKIP=1 and {len(skipped)} skipped: install what the "
                                "skip reasons name", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    # Only the process that made the folder: never one of xdist's workers, nor a pytest that a test starts (it
    # inherits the folder, and removing it would leave the suite's other processes storing into nothing).
    if MADE_CACHE_DIR and not hasattr(config, "workerinput"):
        shutil.rmtree(CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits in the protocol's split (1350 train / 150 val / 297 test)."""
    from ae_jax.data import load_splits
    return load_splits("digits")


@pytest.fixture(scope="session")
def tiny(digits):
    """(train, val) as ``ae_jax.data.Data`` (images and labels): a small slice of digits, enough for a few
    quick steps."""
    from ae_jax.data import Data
    return Data(digits.x_train[:512], digits.y_train[:512]), Data(digits.x_val[:128], digits.y_val[:128])


class FileProgress:
    """One line when a test file starts and one when it ends (its count and seconds), in the process that
    reports: with -q and xdist's workers, the dots alone come only as tests end, and a file that builds a whole
    study first shows nothing for minutes."""

    def __init__(self, reporter):
        self.reporter = reporter
        self.total: dict[str, int] = {}     # file -> tests collected
        self.started: dict[str, float] = {}
        self.done: dict[str, int] = {}

    @staticmethod
    def _file(nodeid: str) -> str:
        return nodeid.split("::", 1)[0]

    def count(self, nodeids) -> None:
        if self.total:  # every worker collects the same tests
            return
        for nodeid in nodeids:
            f = self._file(nodeid)
            self.total[f] = self.total.get(f, 0) + 1

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.count(ids)

    def pytest_collection_finish(self, session):
        self.count(item.nodeid for item in session.items)

    def pytest_runtest_logstart(self, nodeid, location):
        f = self._file(nodeid)
        if f not in self.started:
            self.started[f] = time.monotonic()
            self.reporter.write_line(f"{f}: started ({self.total.get(f, '?')} tests)")

    def pytest_runtest_logreport(self, report):
        if report.when != "teardown":
            return
        f = self._file(report.nodeid)
        self.done[f] = self.done.get(f, 0) + 1
        if self.done[f] == self.total.get(f):
            self.reporter.write_line(f"{f}: done in {time.monotonic() - self.started[f]:.0f} s")


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config):
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not hasattr(config, "workerinput"):
        config.pluginmanager.register(FileProgress(reporter), "ae_jax_file_progress")

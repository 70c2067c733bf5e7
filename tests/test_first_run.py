"""What a newcomer meets first: the headline command on a fresh clone, a pipe into head, a damaged results file,
file permissions, an empty download, and runs kept apart from the committed results."""
from __future__ import annotations

import gzip
import re
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import CACHE_DIR, REPO, RUN_PY, assert_one_line_error, subprocess_env
from ae_jax.data import IDX_FILES, DataError, read_idx
from ae_jax.io import RUNS_ROOT, atomic_write_text, new_file_mode, write_json
from ae_jax.trainer.config import ExperimentConfig, run_dir_for

HEADLINE = ["--model=beta_vae", "--beta=2", "--seeds=5"]


def no_data_env(tmp_path) -> dict:
    """A machine with no MNIST anywhere: no data folder, an empty user cache, no mirror, no TFDS data."""
    env = subprocess_env(XDG_CACHE_HOME=tmp_path / "cache", TFDS_DATA_DIR=tmp_path / "tfds", AE_JAX_MIRRORS="",
                         HOME=tmp_path / "home")
    env.pop("AE_JAX_DATA_DIR", None)
    return env


def test_a_users_runs_land_apart_from_the_committed_results():
    cfg = ExperimentConfig(model="beta_vae", betas=(2.0,))
    assert run_dir_for(cfg, None) == RUNS_ROOT / "mnist" / "beta_vae_beta2"
    assert RUNS_ROOT.parts[0] != "results"
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{RUNS_ROOT}/mnist/x/metrics.json"], cwd=REPO)
    assert ignored.returncode == 0, "runs/ must be git-ignored"


def test_the_headline_command_on_a_fresh_clone_trains_rather_than_reprinting_committed_numbers(tmp_path):
    """In the repository (where results/ holds a committed beta_vae_beta2), with no MNIST to be had, the
    headline command goes for the data and stops with the one-line data error: nothing committed is printed."""
    proc = subprocess.run([sys.executable, str(RUN_PY), *HEADLINE], cwd=REPO, env=no_data_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "mnist", "--data-dir")
    assert "already complete" not in proc.stdout and "mean ± std" not in proc.stdout
    assert not (REPO / RUNS_ROOT / "mnist" / "beta_vae_beta2").exists()  # nothing half-made left behind


def test_piping_into_head_ends_quietly(tmp_path):
    """`run.py ... | head -2`: the reader leaves, the run stops as a Unix tool stops, with no traceback."""
    proc = subprocess.Popen([sys.executable, str(RUN_PY), "--model=vanilla", "--dataset=digits", "--epochs=3",
                             "--seeds=1", f"--out={tmp_path / 'run'}"], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # what `head -2` does after its two lines
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert all(first), first
    assert proc.returncode == 141, (proc.returncode, err)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert err.strip().splitlines() == [err.strip()] and "rerun the same command" in err


def test_a_damaged_metrics_file_is_an_error_before_any_complete_line(tmp_path):
    run = tmp_path / "run"
    args = ["--model=vanilla", "--dataset=digits", "--epochs=1", "--seeds=1", f"--out={run}"]
    from ae_jax.trainer.provenance import config_record
    cfg = ExperimentConfig(model="vanilla", dataset="digits", epochs=1, seeds=1)
    write_json(run / "config.json", config_record(cfg, "python experiments/run.py"))
    (run / "metrics.json").write_text('{"groups": [')  # cut off mid-write by a crash or a full disk
    proc = subprocess.run([sys.executable, str(RUN_PY), *args], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "metrics.json")
    assert "already complete" not in proc.stdout and "reusing" not in proc.stdout


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_result_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    new_file_mode.cache_clear()
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
        mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    finally:
        os.umask(previous)
        new_file_mode.cache_clear()
    assert mode == 0o666 & ~umask, oct(mode)


def test_an_empty_download_says_so(tmp_path):
    empty = tmp_path / IDX_FILES["train_images"]
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file .*download it again"):
        read_idx(empty, 3)
    hollow = tmp_path / IDX_FILES["test_images"]
    with gzip.open(hollow, "wb"):
        pass  # a valid gzip stream with nothing in it
    with pytest.raises(DataError, match="holds no data; download it again"):
        read_idx(hollow, 3)


def test_the_suite_says_when_each_test_file_starts_and_ends():
    """A whole-suite run shows progress per file instead of minutes of silence (tests/conftest.py FileProgress)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           "tests/test_label_budget.py", "-k", "not one_program"], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)  # its quick tests: no compiling
    assert Path(CACHE_DIR).is_dir()  # the suite's compilation cache outlives the pytest a test starts
    assert proc.returncode == 0, proc.stdout[-2000:]
    out = proc.stdout
    start = out.index("tests/test_label_budget.py: started (")
    assert re.search(r"tests/test_label_budget\.py: started \(\d+ tests\)", out)
    assert re.search(r"tests/test_label_budget\.py: done in \d+ s", out[start:])

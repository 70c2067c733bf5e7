"""The scripts' persistent compilation cache (ae_jax.cache.compilation)."""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from _helpers import REPO, cli_command, subprocess_env
from ae_jax.cache import user_cache_root
from ae_jax.io import read_json
from ae_jax.cache import compilation as compile_cache


def test_a_second_run_loads_its_programs_from_the_cache_and_gives_the_same_numbers(tmp_path):
    cache = tmp_path / "xla"
    # the scripts' own settings: JAX alone would store only programs that took a second to compile
    env = subprocess_env(cache=False, AE_JAX_COMPILATION_CACHE=cache)
    args = ["--model=vae", "--dataset=digits", "--epochs=1", "--seeds=2"]
    procs = [subprocess.run(cli_command([*args, f"--out={tmp_path / name}"]), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300) for name in ("first", "second")]
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    assert "compiled the epoch program" in procs[0].stdout
    assert any(cache.iterdir()), "the first run stored nothing in the cache folder"
    assert "loaded from the compilation cache the epoch program" in procs[1].stdout
    first, second = (read_json(tmp_path / name / "metrics.json") for name in ("first", "second"))
    assert first["timing"]["compilation_cache"] and second["timing"]["compilation_cache"]
    for key, m in first["metrics"].items():
        if not key.endswith("_time_s"):
            np.testing.assert_array_equal(m["values"], second["metrics"][key]["values"], err_msg=key)


def test_the_folder_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.folder_setting() == user_cache_root() / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.folder_setting() == tmp_path / "mine"
    for off in ("off", "OFF", "0", "none"):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.folder_setting() is None


def test_jax_s_own_setting_is_kept(monkeypatch, tmp_path):
    before = jax.config.jax_compilation_cache_dir
    assert before, "the suite sets a cache folder (conftest)"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "other"))
    assert compile_cache.enable() == before
    assert jax.config.jax_compilation_cache_dir == before and not (tmp_path / "other").exists()


_SETTINGS = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size",
             "jax_persistent_cache_min_compile_time_secs")


def _enable_fresh(monkeypatch, folder, threshold: float) -> tuple:
    """enable() as if JAX had no folder set and held `threshold`; the settings it leaves, then the suite's back."""
    before = tuple(getattr(jax.config, n) for n in _SETTINGS)
    monkeypatch.setattr(compile_cache, "in_use", lambda: None)
    monkeypatch.setenv(compile_cache.ENV, str(folder))
    try:  # nothing compiles before the settings are put back
        jax.config.update(_SETTINGS[2], threshold)
        assert compile_cache.enable() == str(folder)
        return tuple(getattr(jax.config, n) for n in _SETTINGS)
    finally:
        for n, v in zip(_SETTINGS, before):
            jax.config.update(n, v)


def test_enable_sets_the_folder_and_the_threshold_and_leaves_jax_s_cap_off(monkeypatch, tmp_path):
    """JAX's cap would lock the folder and read every entry on each store (benchmarks/cache_folder.py)."""
    monkeypatch.delenv(compile_cache.MIN_COMPILE_ENV, raising=False)
    now = _enable_fresh(monkeypatch, tmp_path / "xla", threshold=1.0)  # JAX's default threshold
    assert now == (str(tmp_path / "xla"), -1, compile_cache.MIN_COMPILE_S)  # -1: JAX's own "no cap"
    assert (tmp_path / "xla").is_dir()


def _entry(folder, key, size, age_s, atime=False):
    path = folder / f"{key}{compile_cache.ENTRY_SUFFIX}"
    path.write_bytes(b"x" * size)
    stamp = 1_700_000_000 + age_s
    os.utime(path, (stamp, stamp))
    if atime:
        (folder / f"{key}{compile_cache.ATIME_SUFFIX}").write_bytes(b"\0" * 8)
    return path


def test_prune_removes_the_entries_used_longest_ago_down_to_the_cap(tmp_path):
    folder = tmp_path / "xla"
    folder.mkdir()
    paths = {k: _entry(folder, k, 100, age_s=i * 10, atime=(k == "a")) for i, k in enumerate("abcdef")}
    os.utime(paths["b"], (1_700_000_000 + 1000, 1_700_000_000 + 10))  # read last of all, though written early
    (folder / ".lockfile").write_text("")  # anything else in the folder stays
    assert compile_cache.prune(folder, max_bytes=1000) == 0  # 600 bytes: under the cap, nothing goes
    assert compile_cache.prune(folder, max_bytes=350) == 3
    left = sorted(p.name for p in folder.iterdir())
    assert left == [".lockfile"] + [f"{k}{compile_cache.ENTRY_SUFFIX}" for k in "bef"], left  # a, c, d went
    assert compile_cache.prune(tmp_path / "missing", max_bytes=0) == 0


def test_enable_prunes_its_folder_to_max_bytes(monkeypatch, tmp_path):
    folder = tmp_path / "xla"
    folder.mkdir()
    for i in range(4):
        _entry(folder, f"k{i}", 100, age_s=i)
    monkeypatch.setattr(compile_cache, "MAX_BYTES", 250)
    monkeypatch.setattr(compile_cache, "prune", functools.partial(compile_cache.prune, max_bytes=250))
    _enable_fresh(monkeypatch, folder, threshold=1.0)
    assert sorted(p.name for p in folder.iterdir()) == [f"k{i}{compile_cache.ENTRY_SUFFIX}" for i in (2, 3)]


# Two script-like processes on one cache folder: the first stores a program; the test then cuts its entry in
# half, as another process would leave it mid-write; the second must compute the same, without a warning.
_ONE_PROGRAM = """
import sys, jax, jax.numpy as jnp
from ae_jax.cache import compilation as compile_cache
compile_cache.enable()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
since = compile_cache.tally()
x = jnp.arange(12 * 5, dtype=jnp.float32).reshape(12, 5)
print(repr(float(jax.jit(lambda a: (jnp.cos(a) @ a.T - 1.5).sum())(x))), compile_cache.tally()["loaded"] - since["loaded"])
"""


def test_an_entry_read_half_written_is_compiled_afresh_without_a_warning(tmp_path):
    folder = tmp_path / "xla"
    env = subprocess_env(cache=False, AE_JAX_COMPILATION_CACHE=folder)

    def run():
        p = subprocess.run([sys.executable, "-c", _ONE_PROGRAM], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        value, loaded = p.stdout.split()
        return value, int(loaded), p.stderr

    first, loaded, _ = run()
    assert loaded == 0  # an empty folder
    again, loaded, _ = run()
    assert again == first and loaded >= 1  # whole, the entries are loaded (the program, and arange's)
    entries = [p for p in folder.iterdir() if p.name.endswith(compile_cache.ENTRY_SUFFIX)]
    assert entries
    for p in entries:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    value, loaded, err = run()
    assert (value, loaded) == (first, 0)  # every program compiled afresh, to the same number
    assert compile_cache.DAMAGED_ENTRY_WARNING not in err and "Warning" not in err, err


def test_a_threshold_set_with_jax_s_own_variable_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.MIN_COMPILE_ENV, "2")
    assert _enable_fresh(monkeypatch, tmp_path / "xla", threshold=2.0)[2] == 2.0  # as JAX read the variable


@pytest.mark.parametrize("setting", ["off", "unmakeable"])
def test_no_cache_when_off_or_when_the_folder_cannot_be_made(setting, monkeypatch, tmp_path, capsys):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setattr(compile_cache, "in_use", lambda: None)  # as if JAX had no folder set
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(compile_cache.ENV, "off" if setting == "off" else str(blocker / "xla"))
    assert compile_cache.enable() is None
    assert jax.config.jax_compilation_cache_dir == before  # nothing changed
    err = capsys.readouterr().err
    if setting == "off":
        assert err == ""
    else:
        assert len(err.strip().splitlines()) == 1 and str(blocker / "xla") in err and compile_cache.ENV in err


def test_the_tally_counts_programs_and_cache_loads():
    """Two jitted functions that lower to the same program: one compile, one load (the suite's cache is on
    and stores every program), and the line says so."""
    import jax.numpy as jnp
    x = jnp.arange(7 * 13, dtype=jnp.float32).reshape(7, 13)  # a shape no other test compiles for
    since = compile_cache.tally()
    for _ in range(2):
        jax.jit(lambda a: jnp.tanh(a) @ a.T + 3.0)(x).block_until_ready()  # a new function object: no jit reuse
    done = {k: v - since[k] for k, v in compile_cache.tally().items()}
    assert done["programs"] == 2 and done["loaded"] == 1 and done["seconds"] > 0
    line = compile_cache.describe(since)
    assert line.startswith("compilation: 2 XLA programs") and "1 loaded from the compilation cache" in line
    assert "saving" not in compile_cache.describe(compile_cache.tally())  # nothing loaded since: no saving named
    assert [compile_cache._saving(s) for s in (12.4, 0.2, -0.01, -3.0)] == [
        "saving 12 s of compiling", "saving under a second of compiling", "saving under a second of compiling",
        "loading took 3 s longer than compiling would have"]  # JAX's figure is compile time less load time


def test_reports_name_the_runs_whose_compile_time_may_be_a_load(tmp_path):
    from types import SimpleNamespace
    from ae_jax.studies.report import compile_cache_note

    def run(name, cached):
        timing = {"compile_time_s": 1.0} if cached is None else {"compile_time_s": 1.0, "compilation_cache": cached}
        return SimpleNamespace(run_dir=tmp_path / name, metrics={"timing": timing})

    assert compile_cache_note([run("old", None), run("off", False)]) == []  # before the cache, or with it off
    lines = compile_cache_note([run("old", None), run("vae", True), run("off", False), run("vq", True)])
    assert lines[0].startswith("**Compile times may be loads.**") and "vae, vq." in lines[0]
    assert "old" not in lines[0] and "off," not in lines[0]


@pytest.mark.parametrize("flags, cuda, expected", [
    (None, True, compile_cache.TRITON_GEMM_OFF),                       # a CUDA machine: the GEMMs go to cuBLAS
    ("--xla_dump_to=/tmp/d", True, f"--xla_dump_to=/tmp/d {compile_cache.TRITON_GEMM_OFF}"),  # kept beside
    ("--xla_gpu_enable_triton_gemm=true", True, "--xla_gpu_enable_triton_gemm=true"),  # the user's choice
    (None, False, None),                                                # no CUDA plugin: XLA_FLAGS untouched
])
def test_triton_gemms_are_turned_off_only_where_cuda_is_and_the_user_said_nothing(flags, cuda, expected):
    environ = {} if flags is None else {"XLA_FLAGS": flags}
    added = compile_cache.quick_gpu_gemms(environ, cuda=lambda: cuda)
    assert environ.get("XLA_FLAGS") == expected
    assert added == (expected is not None and expected != flags)


def test_the_cuda_plugin_is_found_where_jax_looks_for_plugins(monkeypatch, tmp_path):
    assert not compile_cache._cuda_plugin_installed()  # this machine's jax is CPU-only
    (tmp_path / "jax_plugins" / "xla_cuda13").mkdir(parents=True)
    (tmp_path / "jax_plugins" / "xla_cuda13" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert compile_cache._cuda_plugin_installed()


def test_the_scripts_turn_triton_gemms_off_before_the_backend_starts(monkeypatch):
    from ae_jax.cli import guarded
    monkeypatch.setenv("XLA_FLAGS", "")  # (restored afterwards, whatever guarded sets)
    monkeypatch.setattr(compile_cache, "_cuda_plugin_installed", lambda: True)
    seen = []

    def body() -> int:
        seen.append(os.environ.get("XLA_FLAGS"))
        return 0

    assert guarded(body, "", compilation_cache=False) == 0
    assert seen == [compile_cache.TRITON_GEMM_OFF]

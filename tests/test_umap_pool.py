"""UMAP fits in worker processes (ae_jax.tasks.umap_pool): same embeddings as in this process, a count that fits the
machine, a clear error for a bad setting, a fallback when a worker dies, and umap's compiled code kept on disk."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from _helpers import (REPO, assert_one_line_error, assert_script_refuses, run_script, run_script_json,
                      subprocess_env)
from ae_jax.tasks import umap_pool
from ae_jax.tasks.latent_structure import embed_all
from ae_jax.trainer import ConfigError


def codes(k: int, n: int = 240, dim: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.normal(size=(n, dim)).astype(np.float32) for _ in range(k)]


@pytest.fixture(scope="module")
def module_pool():
    """Worker processes shared by this module's tests (each new process compiles umap's code: ~15 s here)."""
    pool = umap_pool._Pool()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(umap_pool, "_POOL", pool)
        yield pool
    pool.close(kill=True)


@pytest.fixture
def fresh_pool(monkeypatch, module_pool):
    """A pool of the test's own, closed afterwards (the module's stays as it was)."""
    pool = umap_pool._Pool()
    monkeypatch.setattr(umap_pool, "_POOL", pool)
    yield pool
    pool.close(kill=True)


def test_fits_in_worker_processes_equal_fits_in_this_process(monkeypatch, module_pool):
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    z, seeds = codes(3), [0, 1, 7]
    logs = []
    pooled = umap_pool.embed(z, seeds, logs.append)
    assert "UMAP of 3 seeds in 2 worker processes" in logs[0]
    assert not any("in this process" in s for s in logs), logs
    assert len(module_pool.workers) == 2 and all(w.alive() for w in module_pool.workers)
    for emb, zi, sd in zip(pooled, z, seeds):
        assert emb.shape == (240, 2) and emb.dtype == np.float32
        np.testing.assert_array_equal(emb, umap_pool.fit(zi, sd)[0])  # bit for bit
    # the workers stay for the next run (each compiles umap's code once per process), and seeds still differ
    again = umap_pool.embed(z[:1], [1], logs.append)
    assert len(module_pool.workers) == 2
    np.testing.assert_array_equal(again[0], umap_pool.fit(z[0], 1)[0])
    assert not np.array_equal(again[0], pooled[0])


def test_embed_all_keeps_raw_and_non_finite_codes_out_of_the_workers(monkeypatch, fresh_pool):
    """n <= 2 codes are their own embedding and a diverged seed's codes become nan, as embed_2d does them."""
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "4")
    bad = codes(1)[0]
    bad[5, 2] = np.inf
    two = codes(1, dim=2)[0]
    out = embed_all([two, bad], [0, 1], log=lambda s: None)
    np.testing.assert_array_equal(out[0], two)
    assert out[1].shape == (240, 2) and np.isnan(out[1]).all()
    assert fresh_pool.workers == []  # nothing needed UMAP: no process was started


def test_worker_count_is_one_per_fit_up_to_the_cores_unless_set(monkeypatch):
    monkeypatch.delenv(umap_pool.ENV_WORKERS, raising=False)
    monkeypatch.setattr(umap_pool, "cpu_cores", lambda: 16)
    assert [umap_pool.worker_count(k) for k in (0, 1, 5, 40)] == [1, 1, 5, 16]
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "3")
    assert [umap_pool.worker_count(k) for k in (1, 5, 40)] == [1, 3, 3]


def test_one_worker_fits_in_this_process_and_starts_none(monkeypatch, fresh_pool):
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "1")

    def no_worker(*a, **k):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(umap_pool, "_Worker", no_worker)
    z = codes(2)
    out = umap_pool.embed(z, [0, 1], log=lambda s: None)
    np.testing.assert_array_equal(out[1], umap_pool.fit(z[1], 1)[0])


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_an_impossible_worker_count_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv(umap_pool.ENV_WORKERS, value)
    with pytest.raises(ConfigError, match=f"{umap_pool.ENV_WORKERS} must be a whole number.*{value!r}"):
        umap_pool.worker_count(3)


def test_a_script_refuses_an_impossible_worker_count_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "none")
    assert_script_refuses(REPO / "experiments" / "bakeoff.py", ["--dataset=digits", "--seeds=1", "--epochs=3"],
                          tmp_path / "out", capsys, umap_pool.ENV_WORKERS)


def test_a_worker_that_dies_hands_its_fits_back_to_this_process(monkeypatch, fresh_pool):
    """A worker that reads one byte and exits: the fits are redone here, the same embeddings come back."""
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    monkeypatch.setattr(umap_pool, "WORKER_COMMAND", (sys.executable, "-c", "import sys; sys.stdin.buffer.read(1)"))
    logs = []
    z = codes(2)
    out = umap_pool.embed(z, [0, 1], logs.append)
    assert any("a UMAP worker process" in s and "fitting in this process" in s for s in logs), logs
    np.testing.assert_array_equal(out[0], umap_pool.fit(z[0], 0)[0])
    assert fresh_pool.workers == []  # the broken pool is gone; the next call starts afresh


# ------------------------------------------------------------------ benchmarks/umap_workers.py
BENCH = REPO / "benchmarks" / "umap_workers.py"


def test_the_benchmark_times_each_worker_count_and_checks_the_embeddings_agree(tmp_path):
    proc, res = run_script_json(BENCH, ["--fits=3", "--points=60", "--dim=4", "--workers=1,2"], tmp_path / "u.json")
    assert [r["workers"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert r["first_s"] > 0 and r["again_s"] > 0 and r["identical_to_first_count"] is True
        assert r["per_fit_again_s"] == pytest.approx(r["again_s"] / 3)
    assert "| 2 |" in proc.stdout and "differ" not in proc.stdout


@pytest.mark.parametrize("args,fragment", [(["--workers=0,2"], "--workers"), (["--dim=2"], "--dim"),
                                           (["--out=/no/such/dir/u.json"], "--out"), (["--out=/tmp"], "is a folder")])
def test_the_benchmark_refuses_bad_flags_in_one_line(tmp_path, args, fragment):
    assert_one_line_error(run_script(BENCH, args, tmp_path, 120), fragment)


# A fresh interpreter fits UMAP once and says whether umap's smooth_knn_dist (one of umap-learn's numba functions
# without cache=True) kept its code on disk, and whether it was loaded from there (hits) or compiled (misses).
FIT_IN_NEW_PROCESS = """
import sys, numpy as np
from ae_jax.tasks import umap_pool
z = np.random.default_rng(1).normal(size=(60, 4)).astype(np.float32)
emb, _ = umap_pool.fit(z, 0)
np.save(sys.argv[1], emb)
st = sys.modules["umap.umap_"].smooth_knn_dist.stats
print(st.cache_path is not None, sum(st.cache_hits.values()), sum(st.cache_misses.values()))
"""


def _python(code: str, *args: str, **env) -> subprocess.CompletedProcess:
    """`code` run by a fresh interpreter in the repository (the suite's environment plus `env`); it must succeed."""
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=subprocess_env(**env))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _fit_in_new_process(out, **env) -> tuple[np.ndarray, list[str]]:
    proc = _python(FIT_IN_NEW_PROCESS, str(out), **env)
    assert proc.stderr == ""  # numba's "Cannot cache compiled function" warnings included: nothing in a study's log
    return np.load(out), proc.stdout.split()


def test_a_later_process_loads_umaps_compiled_code_and_embeds_as_a_fresh_compile_does(tmp_path):
    """umap's numba code is stored on the first fit and loaded by the next process, which then embeds exactly as
    code compiled afresh does; AE_JAX_COMPILATION_CACHE=off leaves umap's functions uncached (compiled)."""
    _fit_in_new_process(tmp_path / "first.npy")  # stores umap's code (or finds it stored by an earlier process)
    loaded, stats = _fit_in_new_process(tmp_path / "loaded.npy")
    assert stats[0] == "True" and int(stats[1]) >= 1 and stats[2] == "0", stats  # loaded, nothing compiled
    fresh, stats = _fit_in_new_process(tmp_path / "fresh.npy", AE_JAX_COMPILATION_CACHE="off")
    assert stats[0] == "False" and stats[1] == "0" and int(stats[2]) >= 1, stats  # no cache: compiled here
    np.testing.assert_array_equal(loaded, fresh)  # bit for bit


def test_umap_imported_before_ae_jax_asks_for_it_still_keeps_its_code_on_disk():
    """As where TFDS imported tensorflow and umap came in with it: the first _import_umap turns the cache on."""
    code = ("import sys; sys.modules['tensorflow'] = None; import umap; del sys.modules['tensorflow']; "
            "f = sys.modules['umap.umap_'].smooth_knn_dist; before = f.stats.cache_path; "
            "from ae_jax.tasks import umap_pool; umap_pool._import_umap(); print(before is None, f.stats.cache_path is None)")
    assert _python(code).stdout.split() == ["True", "False"]  # uncached as umap-learn ships it, then cached


def test_umap_is_imported_without_tensorflow_and_silently():
    """umap imports tensorflow (when installed) for ParametricUMAP alone: seconds, memory and, with
    tensorflow 2.21, start-up lines on stderr in the middle of a study's log."""
    code = ("import sys; from ae_jax.tasks import umap_pool; umap_pool._import_umap(); "
            "print('tensorflow' in sys.modules, sys.modules.get('tensorflow', 0) is None)")
    proc = _python(code)
    assert proc.stdout.split() == ["False", "False"]  # not imported, and not left blocked for TFDS after it
    assert proc.stderr == ""


# ------------------------------------------------------------------ warming the workers up during training
def test_workers_warmed_up_in_the_background_then_give_the_study_its_own_fits(monkeypatch, module_pool):
    """The warm-up's answer is read by its own thread, so the study's fits get theirs (the warm-up has 300 points,
    the study's codes 240: a mixed-up answer would not even have the right shape)."""
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    logs = []
    umap_pool.warm_up(2, 300, logs.append)
    assert len(module_pool.workers) == 2 and "in the background" in logs[0]
    z = codes(3)
    out = umap_pool.embed(z, [0, 1, 2], logs.append)
    assert not any("compiles" in s for s in logs[1:]), logs  # the processes were there before the fits
    for emb, zi, sd in zip(out, z, [0, 1, 2]):
        np.testing.assert_array_equal(emb, umap_pool.fit(zi, sd)[0])


@pytest.fixture
def planned(digits):
    from ae_jax.studies.driver import PlannedRun, SplitCache, StudyOptions
    from ae_jax.trainer import ExperimentConfig

    def make(tmp_path, latent=20, seeds=3, tasks=("reconstruction", "latent_structure")):
        cfg = ExperimentConfig(model="vanilla", dataset="digits", seeds=seeds, epochs=3, latent_dim=latent)
        splits = SplitCache("digits", None)
        splits._c["full"] = digits
        return [PlannedRun(cfg, tasks)], StudyOptions(dataset="digits", seeds=seeds, out=tmp_path), splits
    return make


@pytest.mark.parametrize("backend,latent,tasks,started", [
    ("gpu", 20, ("reconstruction", "latent_structure"), True),
    ("tpu", 20, ("latent_structure",), True),
    ("cpu", 20, ("latent_structure",), False),   # the training needs the cores
    ("gpu", 2, ("latent_structure",), False),    # n = 2 codes are their own embedding
    ("gpu", 20, ("reconstruction",), False),     # no UMAP in the plan
])
def test_a_study_warms_the_workers_up_only_on_an_accelerator_and_only_when_it_needs_umap(
        monkeypatch, tmp_path, planned, backend, latent, tasks, started):
    import jax
    from ae_jax.studies import driver
    calls = []
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr(umap_pool, "warm_up", lambda w, points, log: calls.append((w, points)))
    monkeypatch.setattr(umap_pool, "cpu_cores", lambda: 16)
    monkeypatch.delenv(umap_pool.ENV_WORKERS, raising=False)
    plan, opts, splits = planned(tmp_path, latent=latent, tasks=tasks)
    assert driver.warm_umap(plan, opts, splits, log=lambda s: None) is started
    assert calls == ([(3, 297)] if started else [])  # one process per seed; the digits test set's 297 codes


def test_no_warm_up_for_a_run_whose_umap_task_is_done(monkeypatch, tmp_path, planned):
    import jax
    from ae_jax.studies import driver
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(umap_pool, "warm_up", lambda *a: pytest.fail("warmed up for a finished task"))
    plan, opts, splits = planned(tmp_path)
    monkeypatch.setattr(driver, "task_done", lambda run_dir, task, seeds: task == "latent_structure")
    assert driver.warm_umap(plan, opts, splits, log=lambda s: None) is False


# ------------------------------------------------------------------ fits left running while the study goes on
def test_submissions_spread_over_every_worker_and_give_the_fits_of_this_process(monkeypatch, module_pool):
    """Runs' fits submitted one after the other (as a study on an accelerator does) go to the next workers
    instead of queueing on the first; each embedding is still the one fitted here."""
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    served, real_fit = [], umap_pool._Worker.fit
    monkeypatch.setattr(umap_pool._Worker, "fit", lambda self, z, sd: served.append(self) or real_fit(self, z, sd))
    z = codes(2)
    first = umap_pool.submit(z[:1], [0], log=lambda s: None, workers=2)
    second = umap_pool.submit(z[1:], [1], log=lambda s: None, workers=2)
    assert len(module_pool.workers) == 2
    out = first.result(lambda s: None) + second.result(lambda s: None)
    assert {id(w) for w in served} == {id(w) for w in module_pool.workers}
    for emb, zi, sd in zip(out, z, [0, 1]):
        np.testing.assert_array_equal(emb, umap_pool.fit(zi, sd)[0])


def test_background_worker_count(monkeypatch):
    monkeypatch.delenv(umap_pool.ENV_WORKERS, raising=False)
    monkeypatch.setattr(umap_pool, "cpu_cores", lambda: 16)
    # one per fit of the whole study up to all cores but one; two at least, so one fit leaves the path too
    assert [umap_pool.background_workers(k) for k in (1, 5, 45)] == [2, 5, 15]
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "4")
    assert [umap_pool.background_workers(k) for k in (1, 45)] == [2, 4]
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "1")  # fit in the study's own process
    assert umap_pool.background_workers(45) == 1


def test_a_run_s_umap_fits_left_running_finish_later_with_the_same_numbers(monkeypatch, tmp_path, planned,
                                                                          module_pool):
    """On an accelerator the driver leaves latent_structure's fits running and finishes the task after the last
    run: its file is written only then (the run's folder locked until then), with the numbers and the figure's
    arrays of the task run whole. Every other task is written at once, so an interruption loses none of it."""
    import shutil

    from ae_jax.io import read_json
    from ae_jax.studies import driver
    from ae_jax.tasks import task_path
    from ae_jax.trainer.folder import LOCK_NAME
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    plan, opts, splits = planned(tmp_path / "now")
    whole = driver.ensure_run(plan[0], opts, splits, log=lambda s: None)  # trained, every task run whole
    name = plan[0].cfg.name()
    shutil.copytree(tmp_path / "now", tmp_path / "later")
    run_dir = tmp_path / "later" / name
    for task in ("reconstruction", "latent_structure"):
        task_path(run_dir, task).unlink()
    (run_dir / "latent.npz").unlink()
    opts.out = tmp_path / "later"
    later, logs = [], []
    collect = driver.start_run(plan[0], opts, splits, logs.append, later)
    assert [(u.tag, [t for t, _ in u.tasks]) for u in later] == [(f"[{name}]", ["latent_structure"])]
    assert task_path(run_dir, "reconstruction").exists()  # nothing of it left for later
    assert not task_path(run_dir, "latent_structure").exists()  # nothing written before the fits are in
    assert (run_dir / LOCK_NAME).exists()
    ledger = driver.TimeLedger()
    driver.finish_later(later, ledger, logs.append)
    assert later == [] and ledger.counts["finishing tasks left running"] == 1
    assert not (run_dir / LOCK_NAME).exists()
    res = collect()
    for task in ("reconstruction", "latent_structure"):
        assert res.tasks[task]["metrics"] == whole.tasks[task]["metrics"], task
    assert read_json(task_path(run_dir, "latent_structure"))["seconds"] > 0
    a, b = np.load(tmp_path / "now" / name / "latent.npz"), np.load(run_dir / "latent.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ConfigError])
def test_a_stopped_study_stops_the_fits_left_running_at_once(monkeypatch, tmp_path, planned, stop):
    """Ctrl-C (or a scheduler's stop) and errors alike: the workers are killed now, not each given 5 s at exit,
    and the runs' folders are unlocked. Ctrl-C also prints the study's time lines so far."""
    import contextlib

    from ae_jax.studies import driver
    plan, opts, _ = planned(tmp_path)
    killed, unlocked = [], []

    class Tiny(driver.Study):
        name = "tiny"

        def plan(self, opts):
            return plan

    def stopped(p, opts, splits, log, later, trained=None):
        lock = contextlib.ExitStack()
        lock.callback(lambda: unlocked.append(p.cfg.name()))
        later.append(driver.Unfinished("[run]", tmp_path, [("latent_structure", lambda: None)], lock))
        raise stop("stop")

    monkeypatch.setattr(driver, "warm_umap", lambda *a: True)  # as on an accelerator
    monkeypatch.setattr(driver, "start_run", stopped)
    monkeypatch.setattr(umap_pool, "close_workers", lambda kill=False: killed.append(kill))
    logs = []
    with pytest.raises(stop):
        driver.run_study(Tiny(), opts, logs.append)
    assert killed == [True] and unlocked == [plan[0].cfg.name()]
    if stop is KeyboardInterrupt:
        assert logs[-2].startswith("compilation: ") and logs[-1].startswith("time: "), logs
    else:
        assert not any(s.startswith("time: ") for s in logs), logs


def test_a_dead_worker_s_fits_go_to_the_live_ones(monkeypatch, fresh_pool):
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    fresh_pool.ensure(2)
    dead, live = fresh_pool.workers
    dead.proc.kill()
    dead.proc.wait()
    logs, z = [], codes(2)
    out = umap_pool.Pending(z, [0, 1], fresh_pool.workers).result(logs.append)
    assert any("a UMAP worker process exited" in s and "the other worker processes" in s for s in logs), logs
    assert fresh_pool.workers == [live] and live.alive()
    for emb, zi, sd in zip(out, z, [0, 1]):
        np.testing.assert_array_equal(emb, umap_pool.fit(zi, sd)[0])


def test_closing_the_pool_gives_all_workers_one_deadline(monkeypatch):
    """Every worker's input is closed first, then each is waited for until one shared deadline: workers that do
    not end (each here takes the whole time it is given) cost 5 s in all, not 5 s each."""
    calls, now = [], [100.0]

    class Stubborn:
        def end_input(self):
            calls.append("end")

        def close(self, kill=False, timeout=5.0):
            calls.append(timeout)
            now[0] += timeout

    monkeypatch.setattr(umap_pool.time, "monotonic", lambda: now[0])
    pool = umap_pool._Pool()
    pool.workers = [Stubborn(), Stubborn(), Stubborn()]
    pool.close()
    assert calls == ["end"] * 3 + [5.0, 0.0, 0.0] and pool.workers == []


def test_a_fit_that_fails_in_a_worker_raises_its_error_here(monkeypatch, module_pool):
    """(Last in the module: a failed fit stops the module's workers.)"""
    monkeypatch.setenv(umap_pool.ENV_WORKERS, "2")
    z = codes(2)
    z[1][0, 0] = np.nan
    with pytest.raises(RuntimeError, match="UMAP failed in a worker process: ValueError.*NaN"):
        umap_pool.embed(z, [0, 1], log=lambda s: None)

"""Helpers shared by the test modules (paths, subprocesses, tree comparison)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUN_PY = REPO / "experiments" / "run.py"
MNIST_DIR = (REPO / ".." / "shared" / "data" / "mnist").resolve()

# One folder for the whole session: the first process to import this (pytest itself, or the controller of
# pytest-xdist's workers) makes it and puts it in the environment, which the workers and subprocesses inherit.
CACHE_DIR_ENV = "AE_JAX_TEST_XLA_CACHE"
MADE_CACHE_DIR = not os.environ.get(CACHE_DIR_ENV)  # this process made it (and removes it at the end)
CACHE_DIR = os.environ.get(CACHE_DIR_ENV) or tempfile.mkdtemp(prefix="ae_jax_test_xla_cache_")
os.environ[CACHE_DIR_ENV] = CACHE_DIR
# The suite's cache settings, as jax.config options (conftest sets them in this process) and, upper-cased, as the
# environment variables of the CLI subprocesses. Every program is stored, however quick its compile. The folder
# is uncapped, as the scripts' own (ae_jax/cache/compilation.py): JAX's cap locks it and reads every entry
# on each store, which took 255 s of the two workers' time in a suite of 531 tests (2026-12-04), and grows with
# the folder. An entry read while another process writes it is compiled afresh (test_compilation).
CACHE_CONFIG = {
    "jax_compilation_cache_dir": CACHE_DIR,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}
CACHE_ENV = {name.upper(): str(value) for name, value in CACHE_CONFIG.items()}


# XLA's settings for the whole suite (tests/conftest.py puts them in the environment of this process and of the
# workers; subprocess_env passes them on): LLVM at optimisation level 1 instead of XLA's default 3. Most of the
# suite's time is compiling, and level 1 compiles in about 40 % less time. The programs compute the same: the
# initial parameters, every training step and so the trained parameters and training losses of every model
# came out bit for bit as at level 3; only a few validation means differ, in their last bit (a sum's order),
# 2026-12-04. Level 0 would be faster still but computes differently (see FAST_COMPILE below).
SUITE_XLA_FLAGS = "--xla_backend_optimization_level=1"


def subprocess_env(cache: bool = True, **extra) -> dict:
    """The current environment (its XLA_FLAGS the suite's), the shared compilation cache (or none), and `extra`."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = SUITE_XLA_FLAGS
    # the checkout under test first on the path, as it is in this process: a `python -c` snippet must import this
    # tree's ae_jax, not whatever an editable install elsewhere points at (seen with one from another clone)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    # never the user's cache folder: the suite's own, or none at all
    env.update(CACHE_ENV if cache else {"AE_JAX_COMPILATION_CACHE": "off"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


# LLVM's optimisation level off: XLA compiles in half the time. The generated code is not the same, though:
# the summed float32 BCE at p = 0.5, for one, is off by 1e-5 relative (5e-7 when optimised), and training drifts
# apart accordingly. So only the tests that compare device layouts use it, for every layout they compare, which
# keeps the comparison exact; the rest of the suite trains as users' programs do, at level 1 (SUITE_XLA_FLAGS;
# the whole suite at level 0 was 1127 s instead of 1290 s on 2 workers, 2026-12-02, and failed two tolerances)
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def forced_devices_env(devices: int, cache: bool = True) -> dict:
    """subprocess_env for a CPU process that sees `devices` host devices, compiling fast."""
    return subprocess_env(cache=cache, JAX_PLATFORMS="cpu",
                          XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}")


def cli_command(args) -> list[str]:
    return [sys.executable, str(RUN_PY), *args]


def run_cli(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    """Run experiments/run.py with `args` in `cwd`, capturing its output."""
    return run_script(RUN_PY, args, cwd, timeout)


def leaves_with_paths(tree) -> dict[str, np.ndarray]:
    """{"enc/dense0/kernel": array, ...}: copies, so a later donation of the tree cannot change them."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): np.array(v)
            for path, v in flat}


def assert_trees_close(a, b, rtol=1e-4, atol=1e-4, what="tree"):
    la, lb = leaves_with_paths(a), leaves_with_paths(b)
    assert la.keys() == lb.keys(), f"{what}: different structure"
    for k in la:
        np.testing.assert_allclose(la[k], lb[k], rtol=rtol, atol=atol, err_msg=f"{what}: {k}")


def run_slice(out, i):
    """Run i of a batched TrainOutput: (train curve, val curve, params, batch_stats)."""
    pick = lambda t: jax.tree.map(lambda a: np.asarray(a)[i], t)  # noqa: E731
    return out.train_curve[:, i], out.val_curve[:, i], pick(out.state.params), pick(out.state.batch_stats)


def assert_runs_equal(out_a, i, out_b, j, rtol=1e-3, ratio=0.1, other=None):
    """Run i of out_a and run j of out_b are the same run trained in two programs.

    Losses agree to rtol. Parameters and BatchNorm statistics: every tensor is at least 1/ratio times
    closer to its twin than to run ``other`` of out_a (default 1 - i: another seed or another beta). Exact or
    element-wise equality is not promised: single elements with a near-zero gradient move by whole
    Adam steps of rounding noise (measured <= 4e-4 RMS in parameters, against >= 8e-3 between seeds).
    """
    ta, va, pa, sa = run_slice(out_a, i)
    tb, vb, pb, sb = run_slice(out_b, j)
    _, _, po, so = run_slice(out_a, 1 - i if other is None else other)
    np.testing.assert_allclose(ta, tb, rtol=rtol, err_msg="train curve")
    np.testing.assert_allclose(va, vb, rtol=rtol, err_msg="validation curve")
    for what, (ta_, tb_, to_) in (("params", (pa, pb, po)), ("batch_stats", (sa, sb, so))):
        la, lb, lo = leaves_with_paths(ta_), leaves_with_paths(tb_), leaves_with_paths(to_)
        assert la.keys() == lb.keys()
        for k in la:
            a, b, o = (np.asarray(t[k], np.float64) for t in (la, lb, lo))
            twin, other = np.linalg.norm(a - b), np.linalg.norm(a - o)
            assert twin <= ratio * other + 1e-6, f"{what} {k}: {twin:.3g} from its twin, {other:.3g} from the other run"


def assert_one_line_error(proc, *fragments: str):
    """A script refused bad input: exit 2, exactly one stderr line naming each fragment, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def read_curves(run_dir) -> list[dict]:
    """A run folder's curves.jsonl: one dict per epoch (epoch, train_loss and val_loss per run, seconds)."""
    return [json.loads(line) for line in (Path(run_dir) / "curves.jsonl").read_text().splitlines()]


# numpy references (float64) of the reconstruction errors, summed per image, and of the sparsity KL
def sigmoid_numpy(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def bce_numpy(logits, x):
    """PyTorch's BCELoss(reduction='none') on sigmoid(logits): logs clamped at -100."""
    p = sigmoid_numpy(logits)
    with np.errstate(divide="ignore"):
        per = -(x * np.maximum(np.log(p), -100.0) + (1 - x) * np.maximum(np.log(1 - p), -100.0))
    return per.reshape(len(x), -1).sum(-1)


def bernoulli_kl_numpy(p, q):
    """KL(Bern(p) || Bern(q)) elementwise, in float64 (no clipping)."""
    q = np.asarray(q, np.float64)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def mse_numpy(logits, x):
    return ((sigmoid_numpy(logits) - x) ** 2).reshape(len(x), -1).sum(-1)


def load_script(path):
    """Import a script (experiments/, benchmarks/) as a module, without running its main().

    Its folder goes on sys.path, as ``python path`` puts it there (benchmarks/ import their ``common``)."""
    import importlib.util
    folder = str(Path(path).resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(path, args, cwd, timeout=600) -> subprocess.CompletedProcess:
    """Run a script with `args` in a fresh interpreter in `cwd`, capturing its output."""
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def run_here(path, args, capsys, cwd=None) -> subprocess.CompletedProcess:
    """run_script's twin in this process: the script's main(args) (in `cwd`, if given), its exit status and what
    it printed, read through pytest's capsys. Saves the ~3 s start of a fresh interpreter, and cannot show what
    one prints on the way (an import's warning)."""
    capsys.readouterr()
    before = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        rc = load_script(path).main(args)
    except SystemExit as e:
        rc = e.code
    finally:
        os.chdir(before)
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, printed.out, printed.err)


def run_script_json(path, args, out, timeout=600) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a script that writes JSON to --out=out; it must succeed: (process, the JSON)."""
    import json
    proc = run_script(path, [*args, f"--out={out}"], REPO, timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(Path(out).read_text())


def invoke_script(path, argv) -> tuple[int, str]:
    """Run an experiments/ script's main(argv) in this process: (exit status, what it printed)."""
    import contextlib
    import io
    module = load_script(path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = module.main(argv)
    return rc, out.getvalue()


def invoke_without_training(path, argv) -> tuple[int, str]:
    """invoke_script, with any attempt of the study driver to train a run failing the test."""
    import pytest
    from ae_jax.studies import driver

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "run_experiment", no_training)
        return invoke_script(path, argv)


def invoke_ok(path, argv, train: bool = True) -> str:
    """invoke_script (invoke_without_training where train is False) that must exit 0: what it printed."""
    rc, log = (invoke_script if train else invoke_without_training)(path, argv)
    assert rc == 0, log[-3000:]
    return log


def assert_script_refuses(path, argv, out, capsys, fragment: str) -> None:
    """A study script given bad input (with --out=out): exit 2, one stderr line naming fragment, nothing at out."""
    proc = run_here(path, [*argv, f"--out={out}"], capsys)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not Path(out).exists()

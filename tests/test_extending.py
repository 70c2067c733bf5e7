"""The documentation's promise: a new model is one bottleneck module plus one registry line.

The worked example is taken from docs/extending.md itself (its two code blocks), so
the documentation cannot drift from what works. And the package as others
install it: the wheel holds every module, and the oldest versions CI tests are
the floors pyproject.toml declares.
"""
from __future__ import annotations

import re
import types
import zipfile
import subprocess
import sys

import numpy as np
import pytest

from _helpers import REPO, read_curves


def _docs_example() -> tuple[str, str]:
    text = (REPO / "docs" / "extending.md").read_text()
    section = text[text.index("## A model"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the worked example of docs/extending.md has a bottleneck module and a registry line"
    return blocks[0], blocks[1]


@pytest.fixture
def bounded_model():
    from ae_jax import models
    module_src, register_src = _docs_example()
    mod = types.ModuleType("bounded_example")
    exec(module_src.replace("from .losses", "from ae_jax.models.losses")
         .replace("from .bottleneck", "from ae_jax.models.bottleneck"),
         mod.__dict__)
    ns = {"register": models.register, "ModelSpec": models.ModelSpec, "Bounded": mod.Bounded}
    exec("\n".join(line for line in register_src.splitlines() if not line.startswith("from ")), ns)
    yield models.MODELS["bounded"]
    del models.MODELS["bounded"]


def test_documented_model_trains_and_runs_the_tasks(bounded_model, tmp_path, digits):
    from ae_jax.studies.driver import PlannedRun, SplitCache, StudyOptions, applicable_tasks, ensure_run
    from ae_jax.trainer import ExperimentConfig
    cfg = ExperimentConfig(model="bounded", dataset="digits", seeds=2, epochs=2, betas=(0.1,))
    p = PlannedRun(cfg, ("reconstruction", "samples", "probe"))
    assert applicable_tasks(p) == ["reconstruction", "probe"]  # no prior: no samples task
    r = ensure_run(p, StudyOptions(dataset="digits", seeds=2, epochs=2, out=tmp_path), SplitCache("digits", None),
                   log=lambda s: None)
    h = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)  # inside tanh's curved range
    code = bounded_model.bottleneck(h, None, _hp(0.1))  # the documented bottleneck is the one registered
    np.testing.assert_allclose(np.asarray(code.z), np.tanh(h), rtol=1e-5)
    np.testing.assert_allclose(float(code.extra), 0.1 * np.mean(np.sum(np.tanh(h) ** 2, -1)), rtol=1e-5)
    curves = read_curves(tmp_path / cfg.name())
    assert len(curves) == 2 and all(b < a for a, b in zip(curves[0]["train_loss"], curves[1]["train_loss"]))
    e = r.entry()
    assert e["test_bce"]["mean"] < 1024 * np.log(2)  # below a grey image's: it learnt something
    assert 0 <= e["probe_accuracy"]["mean"] <= 1 and len(e["probe_accuracy"]["values"]) == 2
    assert (tmp_path / cfg.name() / "tasks" / "probe.json").exists()


def _hp(beta):
    from ae_jax.models.losses import Hparams
    f = np.float32
    return Hparams(beta=f(beta), noise_std=f(0), sparsity=f(0.25), lr=f(1e-3))


def test_wheel_holds_every_module(tmp_path):
    """A non-editable install must get every subpackage: build the wheel and compare with the source tree."""
    import importlib.util
    import shutil
    if importlib.util.find_spec("setuptools") is None:  # Python 3.12's venv comes without it
        pytest.skip("building the wheel without build isolation needs setuptools (pip install setuptools)")
    had_build = (REPO / "build").exists()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    if not had_build:  # setuptools builds in the source tree: leave it as it was
        shutil.rmtree(REPO / "build", ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("ae_jax-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {str(p.relative_to(REPO)) for p in (REPO / "ae_jax").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert source - names == set(), f"missing from the wheel: {sorted(source - names)}"


def test_the_oldest_versions_ci_tests_are_pyprojects_floors():
    """.ci/oldest-versions.txt pins exactly the floor (>=) of every dependency and test dependency, and jaxlib
    at jax's, and .ci/oldest-tfds.txt the tfds extra's: a floor raised or lowered in one file and not the
    other would be a floor nobody tested."""
    from packaging.version import Version
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, flags=re.S | re.M).group(1)
    test = re.search(r"^test = \[(.*?)\]", text, flags=re.M).group(1)
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)"', deps + test))
    assert {"jax", "flax", "optax", "orbax-checkpoint", "numpy", "pytest"} <= floors.keys()
    assert len(floors) == len(re.findall(r'"[^"]+"', deps + test)), "every dependency has a >= floor"
    pins = dict(line.split("==") for line in (REPO / ".ci" / "oldest-versions.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    expected = {**floors, "jaxlib": floors["jax"]}
    assert pins.keys() == expected.keys()
    assert {k: Version(v) for k, v in pins.items()} == {k: Version(v) for k, v in expected.items()}  # 0.6 == 0.6.0
    # the tfds extra: its floors (tensorflow-cpu's and tensorflow's the same) are pinned in oldest-tfds.txt
    extra = re.search(r"^tfds = \[(.*?)^\]", text, flags=re.S | re.M).group(1)
    tfds_floors = re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)', extra)
    tf = {Version(v) for k, v in tfds_floors if k in ("tensorflow", "tensorflow-cpu")}
    assert len(tfds_floors) == 3 and len(tf) == 1
    tfds_pins = dict(line.split("==") for line in (REPO / ".ci" / "oldest-tfds.txt").read_text().splitlines()
                     if line.strip() and not line.startswith("#"))
    for name, floor in tfds_floors:
        if name != "tensorflow":  # the build for other platforms than Linux x86_64, where CI runs
            assert Version(tfds_pins[name]) == Version(floor), name

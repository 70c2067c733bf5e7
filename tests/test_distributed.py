"""More than one process: two local processes joined by jax.distributed train one experiment into one folder.

Each process of the pair sees 2 forced CPU devices (4 in all; 3 seeds, so the
run axis is padded) and exchanges data over gloo. Process 0 runs in one empty
folder and process 1 in another, both with the default (relative) run folder,
so whatever process 1 wrote of its own would show in its folder. A single
process on one device trains the same configuration alongside, as the
reference. All of them share the session's compilation cache, so the second
pair (the resumed run) compiles little.

Every subprocess runs under a deadline; past it all are killed and the test
fails with what they printed, so nothing here can hang CI.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from _helpers import (assert_one_line_error, assert_runs_equal, cli_command, forced_devices_env, read_curves,
                      subprocess_env)
from ae_jax.cli import ArgParser, add_distributed_args, join_processes
from ae_jax.io import RUNS_ROOT
from ae_jax.models import MODELS
from ae_jax.trainer import ExperimentConfig, load_final_state

ARGS = ["--model=shallow", "--dataset=digits", "--epochs=2", "--seeds=3", "--latent-dim=4"]
CFG = ExperimentConfig(model="shallow", dataset="digits", epochs=2, seeds=3, latent_dim=4)
RUN = RUNS_ROOT / "digits" / CFG.name()
DEADLINE_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(command: list[str], cwd: Path, devices: int) -> subprocess.Popen:
    env = forced_devices_env(devices)
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: dict[str, subprocess.Popen], deadline_s: float = DEADLINE_S) -> dict[str, types.SimpleNamespace]:
    """Wait for every process (all killed past the deadline: the test then fails with their output)."""
    end = time.monotonic() + deadline_s
    done = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=max(end - time.monotonic(), 1))
            done[name] = types.SimpleNamespace(returncode=p.returncode, stdout=out, stderr=err)
    except subprocess.TimeoutExpired:
        report = []
        for name, p in procs.items():
            p.kill()
            out, err = p.communicate()
            report.append(f"--- {name}: stdout\n{out[-2000:]}\n--- {name}: stderr\n{err[-3000:]}")
        pytest.fail(f"still running after {deadline_s} s, killed:\n" + "\n".join(report))
    return done


def _pair(args, cwd0: Path, cwd1: Path, **more: tuple) -> dict[str, types.SimpleNamespace]:
    """Processes 0 and 1 of a two-process run (2 devices each), plus `more` {name: (args, cwd)} on one device."""
    port = _free_port()
    procs = {f"process {i}": _launch(cli_command([*args, f"--coordinator=127.0.0.1:{port}", "--num-processes=2",
                                                  f"--process-id={i}"]), cwd, 2) for i, cwd in enumerate((cwd0, cwd1))}
    procs.update({name: _launch(cli_command(a), cwd, 1) for name, (a, cwd) in more.items()})
    return _finish(procs)


def _ok(results: dict) -> None:
    for name, r in results.items():
        assert r.returncode == 0, f"{name} exited with {r.returncode}:\n{r.stderr[-3000:]}"


def _output(run_dir: Path, cfg: ExperimentConfig = CFG) -> types.SimpleNamespace:
    """A run folder as the trainer's output: curves [E, R] from curves.jsonl, the state of the last checkpoint."""
    curves = read_curves(run_dir)
    state = load_final_state(MODELS[cfg.model], cfg.train_config(), cfg.seeds, run_dir / "checkpoints")
    assert state is not None, f"no final checkpoint in {run_dir}"
    return types.SimpleNamespace(train_curve=np.array([c["train_loss"] for c in curves]),
                                 val_curve=np.array([c["val_loss"] for c in curves]), state=state)


def _per_run(metrics: dict) -> dict[str, np.ndarray]:
    return {k: np.array(m["values"], np.float64) for k, m in metrics["metrics"].items() if k != "train_time_s"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The two-process run and the single-process reference, trained side by side."""
    root = tmp_path_factory.mktemp("distributed")
    dirs = types.SimpleNamespace(p0=root / "p0", p1=root / "p1", ref=root / "ref")
    results = _pair(ARGS, dirs.p0, dirs.p1, reference=(ARGS, dirs.ref))
    _ok(results)
    return dirs, results


def test_two_processes_write_one_run_folder_with_the_numbers_of_one_process(pair):
    dirs, results = pair
    assert list(dirs.p1.iterdir()) == [], "process 1 wrote files of its own"
    run = dirs.p0 / RUN
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "curves.jsonl", "metrics.json"]
    assert "written to" in results["process 0"].stdout and "written to" not in results["process 1"].stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["seed"] for r in metrics["runs"]] == [0, 1, 2]
    assert metrics["device"]["count"] == 4 and metrics["device"]["processes"] == 2
    ref = json.loads((dirs.ref / RUN / "metrics.json").read_text())
    assert ref["device"]["count"] == 1 and "processes" not in ref["device"]

    got, want = _per_run(metrics), _per_run(ref)
    assert got.keys() == want.keys() and all(v.shape == (3,) for v in got.values())
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3, err_msg=k)
    # the checkpoint holds the 3 real runs (no padding), each the twin of the single-process run's
    two, one = _output(run), _output(dirs.ref / RUN)
    assert two.train_curve.shape == (2, 3)
    for r in range(3):
        assert_runs_equal(two, r, one, r, other=(r + 1) % 3)


def test_two_processes_resume_from_the_checkpoint_process_0_holds(pair, tmp_path):
    """Process 0 reads the checkpoint and hands it to process 1: an unfinished run resumes on both."""
    dirs, _ = pair
    q0, q1 = tmp_path / "q0", tmp_path / "q1"
    shutil.copytree(dirs.p0 / RUNS_ROOT, q0 / RUNS_ROOT)
    (q0 / RUN / "metrics.json").unlink()  # the last checkpoint is there; the run is not marked done
    results = _pair(ARGS, q0, q1)
    _ok(results)
    assert "resuming from the checkpoint after epoch 2" in results["process 0"].stdout
    assert list(q1.iterdir()) == []
    before = _per_run(json.loads((dirs.p0 / RUN / "metrics.json").read_text()))
    after = _per_run(json.loads((q0 / RUN / "metrics.json").read_text()))
    for k in before:  # the same trained state, evaluated again
        np.testing.assert_allclose(after[k], before[k], rtol=1e-5, err_msg=k)


# Each process: 3 runs padded over 4 devices, then many exchanges in a row, each checked. The padding dropped
# leaf by leaf put one exchange per leaf in flight at once; under JAX 0.6 the two processes then sent their
# gloo messages in different orders and one aborted ("op.preamble.length <= op.nbytes"), within 30 rounds.
EXCHANGES = """
import sys
import jax, jax.numpy as jnp, numpy as np
from ae_jax.trainer import distributed
from ae_jax.trainer.loop import RunAxis
pid = int(sys.argv[2])
distributed.initialize(sys.argv[1], 2, pid)
axis = RunAxis(3)
state = axis.put({f"w{i}": jnp.stack([jnp.full((5 + i % 3, 7), float(r)) for r in range(3)]) for i in range(40)})
for step in range(30):
    real = axis.unpad(state)
    assert distributed.on_writer(lambda: ("step", step)) == ("step", step)
    assert distributed.everywhere(lambda: step * 10 + pid) == step * 10 + pid
    got = distributed.to_host(real)
    assert got["w3"].shape == (3, 5, 7) and list(got["w3"][:, 0, 0]) == [step, step + 1, step + 2]
    state = axis.put(jax.tree.map(lambda a: a + 1, got))
print("exchanged", step + 1, "times")
"""


def test_many_exchanges_in_a_row_keep_the_same_order_in_both_processes(tmp_path):
    port = _free_port()
    procs = {f"process {i}": _launch([sys.executable, "-c", EXCHANGES, f"127.0.0.1:{port}", str(i)], tmp_path, 2)
             for i in range(2)}
    results = _finish(procs, deadline_s=150)
    _ok(results)
    for r in results.values():
        assert "exchanged 30 times" in r.stdout


def test_a_run_refused_on_process_0_stops_both_processes_with_its_one_line_error(pair, tmp_path):
    """Process 0 finds another run's folder; process 1, which has no such folder, stops with the same error."""
    dirs, _ = pair
    run = dirs.p0 / RUN
    before = (run / "metrics.json").read_text()
    other = [a if not a.startswith("--epochs") else "--epochs=1" for a in ARGS] + [f"--out={run}"]
    results = _pair(other, tmp_path / "r0", tmp_path / "r1")
    for r in results.values():
        assert_one_line_error(types.SimpleNamespace(returncode=r.returncode, stderr=_without_gloo(r.stderr)),
                              "differs in epochs")
    assert (run / "metrics.json").read_text() == before


def _without_gloo(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("[Gloo]"))


def test_distributed_where_the_environment_names_no_processes_is_a_one_line_error(tmp_path):
    """Outside a TPU pod slice or SLURM job, --distributed alone says what to give instead, and writes nothing."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE"))}
    proc = subprocess.run(cli_command(ARGS + ["--distributed"]), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert_one_line_error(proc, "--distributed", "--coordinator=HOST:PORT")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, fragment", [
    (["--process-id=0"], "go together"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=2"], "go together"),
    (["--coordinator=127.0.0.1", "--num-processes=2", "--process-id=0"], "HOST:PORT"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=0", "--process-id=0"], "--num-processes"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=2", "--process-id=2"], "between 0 and 1"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=2", "--process-id=-1"], "--process-id"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=2", "--process-id=0", "--join-timeout=0"], "--join-timeout"),
    (["--coordinator=127.0.0.1:1234", "--num-processes=2", "--process-id=0", "--join-timeout=nan"], "--join-timeout"),
], ids=["id_alone", "no_id", "no_port", "no_processes", "id_out_of_range", "negative_id", "no_wait", "nan_wait"])
def test_impossible_process_flags_are_refused_before_joining(capsys, args, fragment):
    p = ArgParser(prog="run.py")
    add_distributed_args(p)
    with pytest.raises(SystemExit) as stop:
        join_processes(p.parse_args(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and fragment in err[0], err


def test_no_process_flags_join_nothing():
    p = ArgParser(prog="run.py")
    add_distributed_args(p)
    assert join_processes(p.parse_args([])) is False

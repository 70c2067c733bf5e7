"""experiments/run.py end to end (subprocesses), its errors, resume after kill -9, metrics.json, and the
identity of a run folder (what makes two runs different, and what an older config.json means)."""
from __future__ import annotations

import gzip
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import flax
import jax
import numpy as np
import pytest

import ae_jax
from _helpers import (REPO, RUN_PY, assert_one_line_error, cli_command, load_script, read_curves, run_cli,
                      run_here, subprocess_env)
from ae_jax.data import IDX_FILES, load_splits
from ae_jax.cli import guarded, study_parser
from ae_jax.io import aggregate, read_json, write_json
from ae_jax.models import NUM_CLASSES
from ae_jax.trainer import TrainOutput
from ae_jax.trainer.config import ConfigError, ExperimentConfig
from ae_jax.trainer.folder import LOCK_NAME, REPLACED_DIR, folder_lock, interrupted_note
from ae_jax.trainer.provenance import IDENTITY, check_same_config, config_record, data_fingerprint
from ae_jax.trainer.results import device_text, format_table, result_metrics
from ae_jax.trainer.run import run_experiment



def write_idx_set(folder, corrupt: str | None = None):
    """Four small IDX files (12 train, 5 test images); `corrupt` names a file written as garbage."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {"train_images": (12, 28, 28), "train_labels": (12,), "test_images": (5, 28, 28), "test_labels": (5,)}
    for key, shape in shapes.items():
        arr = np.zeros(shape, np.uint8)
        payload = bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + arr.tobytes()
        if key == corrupt:
            payload = b"\x12\x34" + payload[2:]
        with gzip.open(folder / IDX_FILES[key], "wb") as f:
            f.write(payload)


ERRORS = {
    # id: (arguments, fragments the one line must contain)
    "unknown_model": (["--model=nope"], ["unknown model 'nope'", "vanilla"]),
    "unknown_dataset": (["--model=vanilla", "--dataset=cifar"], ["unknown dataset 'cifar'"]),
    "seeds_0": (["--model=vanilla", "--seeds=0"], ["--seeds"]),
    "epochs_0": (["--model=vanilla", "--epochs=0"], ["--epochs"]),
    "beta_negative": (["--model=vae", "--beta=-1"], ["--beta", "-1"]),
    "beta_on_identity_model": (["--model=vanilla", "--beta=2"], ["--beta", "beta_vae", "cvae"]),
    "beta_twice": (["--model=beta_vae", "--dataset=digits", "--beta=1,2,2"], ["--beta", "2 more than once"]),
    "beta_empty_item": (["--model=beta_vae", "--dataset=digits", "--beta=1,,2"], ["--beta", "'1,,2'"]),
    "data_dir_for_digits": (["--model=vanilla", "--dataset=digits", "--data-dir={tmp}/empty"],
                            ["--data-dir", "digits", "mnist"]),
    "lr_0": (["--model=vanilla", "--lr=0"], ["--lr"]),
    "noise_std_on_vae": (["--model=vae", "--dataset=digits", "--noise-std=0.1,0.2"], ["--noise-std", "denoising"]),
    "sparsity_out_of_range": (["--model=sparse", "--dataset=digits", "--sparsity=0.1,1"], ["--sparsity", "between"]),
    "lr_grid_twice": (["--model=vae", "--dataset=digits", "--lr=1e-3,0.001"], ["--lr", "more than once"]),
    "stacked_2_epochs": (["--model=stacked", "--epochs=2"], ["at least 3"]),
    "seeds_not_a_number": (["--model=vanilla", "--seeds=two"], ["--seeds"]),
    "missing_data_dir": (["--model=vanilla", "--dataset=mnist", "--data-dir={tmp}/no_such_dir"], ["no such folder"]),
    "data_dir_without_files": (["--model=vanilla", "--dataset=mnist", "--data-dir={tmp}/empty"],
                               ["lacks", IDX_FILES["train_images"]]),
    "corrupt_data": (["--model=vanilla", "--dataset=mnist", "--data-dir={tmp}/corrupt"],
                     [IDX_FILES["test_images"], "magic"]),
    "latent_too_large": (["--model=vae", "--dataset=digits", "--latent-dim=600"], ["--latent-dim", "512"]),
    "batch_larger_than_data": (["--model=vanilla", "--dataset=digits", "--batch-size=5000"], ["5000"]),
    "unknown_loss": (["--model=vanilla", "--dataset=digits", "--loss=nope"], ["--loss", "'nope'", "mse"]),
    "unknown_precision": (["--model=vanilla", "--dataset=digits", "--precision=nope"],
                          ["--precision", "'nope'", "float32"]),
    "unknown_widths": (["--model=vanilla", "--dataset=digits", "--widths=nope"], ["--widths", "'nope'", "fixed"]),
    "lr_infinite": (["--model=vanilla", "--dataset=digits", "--lr=inf"], ["--lr", "finite"]),
    "seed_past_32_bits": (["--model=vanilla", "--dataset=digits", "--seed=99999999999999999999"],
                          ["--seed", "2147483643"]),
    "seed_negative": (["--model=vanilla", "--dataset=digits", "--seed=-1"], ["--seed"]),
    "epochs_absurd": (["--model=vanilla", "--dataset=digits", "--epochs=1000000000000"], ["--epochs", "1,000,000"]),
    "out_is_a_file": (["--model=vanilla", "--dataset=digits", "--out={tmp}/a_file"], ["--out", "is a file"]),
    "out_under_a_file": (["--model=vanilla", "--dataset=digits", "--out={tmp}/a_file/run"], ["a_file is a file"]),
    "seeds_beyond_memory": (["--model=vanilla", "--dataset=digits", "--seeds=100000"],
                            ["100000 run(s)", "cannot fit in device memory", "seeds x betas <="]),
    "damaged_gzip": (["--model=vanilla", "--dataset=mnist", "--data-dir={tmp}/damaged"],
                     [IDX_FILES["test_labels"], "gzip"]),
}


# A fresh interpreter costs each case about 3 s of start-up (importing jax) and adds one thing to what main()
# shows in this process: nothing printed on the way (an import's warning, a backend's notice) may add a line to
# stderr. The FRESH_PROCESS cases stop at each stage a run goes through (its arguments, the data files, the
# device memory check after the backend has started) and run in one; the rest call run.py's main() here.
FRESH_PROCESS = ("unknown_model", "corrupt_data", "seeds_beyond_memory")


def test_the_fresh_process_cases_are_cases():
    assert set(FRESH_PROCESS) <= set(ERRORS)


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case, capsys):
    args, fragments = ERRORS[case]
    data = tmp_path / "data"
    (data / "empty").mkdir(parents=True)
    write_idx_set(data / "corrupt", corrupt="test_images")
    write_idx_set(data / "damaged")
    labels = data / "damaged" / IDX_FILES["test_labels"]
    raw = bytearray(gzip.compress(gzip.decompress(labels.read_bytes()), mtime=0))
    raw[10] |= 0b110  # a deflate block type that does not exist: zlib fails, not gzip's CRC check
    labels.write_bytes(bytes(raw))
    (data / "a_file").write_text("not a folder")
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "run"
    args = [f"--out={out}"] + [a.format(tmp=data) for a in args]  # a case's own --out comes last and wins
    proc = run_cli(args, cwd=work) if case in FRESH_PROCESS else run_here(RUN_PY, args, capsys, cwd=work)
    assert_one_line_error(proc, *fragments)
    assert not out.exists()
    assert (data / "a_file").read_text() == "not a folder"
    assert list(work.iterdir()) == []  # nothing in the working directory either (no results/)


# ------------------------------------------------------------------ end to end
E2E_ARGS = ["--model=vanilla", "--dataset=digits", "--epochs=3", "--seeds=2"]


# The shell leaves the ~ of --out=~/x alone, so the scripts expand it themselves.
PATH_FLAGS = {
    "experiments/run.py": (["--model=vanilla"], True),
    "experiments/explore.py": ([], True),
    "benchmarks/run_count.py": ([], True),
    "benchmarks/throughput.py": ([], False),
    "benchmarks/umap_workers.py": ([], False),
}


@pytest.mark.parametrize("script", sorted(PATH_FLAGS))
def test_every_script_expands_a_leading_tilde_in_its_path_flags(script, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    extra, has_data_dir = PATH_FLAGS[script]
    argv = [*extra, "--out=~/out.json"] + (["--data-dir=~/data"] if has_data_dir else [])
    args = load_script(REPO / script).parse(argv)
    assert args.out == str(tmp_path / "out.json")
    if has_data_dir:
        assert args.data_dir == str(tmp_path / "data")
    study = study_parser("study.py", None).parse_args(["--out=~/results", "--data-dir=~/data"])
    assert (study.out, study.data_dir) == (str(tmp_path / "results"), str(tmp_path / "data"))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    out = root / "run"
    proc = run_cli(E2E_ARGS + [f"--out={out}"], cwd=root)
    return proc, out


def test_cli_run_writes_metrics_config_and_curves(e2e):
    proc, out = e2e
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "curves.jsonl", "metrics.json"]

    config = read_json(out / "config.json")
    assert config["command"] == "python experiments/run.py " + " ".join(E2E_ARGS + [f"--out={out}"])
    assert (config["model"], config["dataset"], config["epochs"], config["seeds"]) == ("vanilla", "digits", 3, 2)
    assert config["seed_list"] == [0, 1] and config["latent_dim"] == 20
    assert (config["loss"], config["precision"], config["widths"]) == ("bce", "float32", "protocol")
    # provenance: the package version, the source revision, and the exact data trained on
    assert config["version"] == ae_jax.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # a commit of this repository's history (HEAD may have moved on since the run)
        commit, _, dirty = config["revision"].partition("+")
        assert dirty in ("", "dirty") and len(commit) == 40
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO)
        assert ancestor.returncode == 0, f"{config['revision']} is not in the history of HEAD"
    splits = load_splits("digits")
    assert config["data"] == {"source": splits.source, "fingerprint": data_fingerprint(splits)}
    assert config["libraries"]["jax"] == jax.__version__ and config["libraries"]["flax"] == flax.__version__
    assert config["libraries"]["numpy"] == np.__version__ and "optax" in config["libraries"]

    curves = read_curves(out)
    assert [c["epoch"] for c in curves] == [1, 2, 3]
    for c in curves:
        assert len(c["train_loss"]) == len(c["val_loss"]) == 2
        assert all(math.isfinite(v) for v in c["train_loss"] + c["val_loss"]) and c["seconds"] > 0
    assert all(a > b for a, b in zip(curves[0]["train_loss"], curves[-1]["train_loss"]))

    metrics = read_json(out / "metrics.json")
    assert (metrics["model"], metrics["dataset"], metrics["variant"], metrics["latent_dim"]) == \
        ("vanilla", "digits", "full", 20)
    assert metrics["diverged"] == []
    assert len(metrics["groups"]) == 1
    group = metrics["groups"][0]
    assert group["beta"] is None and group["seeds"] == [0, 1]
    assert metrics["metrics"] == group["metrics"]
    for key in ("final_train_loss", "final_val_loss", "test_bce", "train_time_s"):
        m = group["metrics"][key]
        assert len(m["values"]) == 2 and m["n"] == 2
        assert m["mean"] == pytest.approx(np.mean(m["values"]))
        assert m["std"] == pytest.approx(np.std(m["values"], ddof=1))
    assert group["metrics"]["final_train_loss"]["values"] == pytest.approx(curves[-1]["train_loss"])
    assert group["metrics"]["final_val_loss"]["values"] == pytest.approx(curves[-1]["val_loss"])
    assert group["metrics"]["test_bce"]["mean"] < 1024 * math.log(2)  # better than a constant grey image
    # per-class test errors, weighted by the test set's class counts, give the overall ones back
    counts = np.bincount(load_splits("digits").y_test, minlength=NUM_CLASSES)
    for k in ("bce", "mse"):
        per = np.array([group["metrics"][f"test_{k}_class{d}"]["values"] for d in range(NUM_CLASSES)])  # [10, R]
        np.testing.assert_allclose(counts @ per / counts.sum(), group["metrics"][f"test_{k}"]["values"], rtol=1e-6)
    assert f"on {device_text(metrics['device'])}" in proc.stdout  # the table names the devices it recorded
    assert metrics["timing"]["train_time_s"] > 0
    assert metrics["timing"]["cpu_count"] == os.cpu_count()  # the cores its load average was shared by
    assert "test_bce" in proc.stdout and "mean ± std" in proc.stdout and str(out) in proc.stdout


def test_cli_rerun_reports_complete_without_retraining(e2e):
    proc, out = e2e
    assert proc.returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.json*")}
    again = run_cli(E2E_ARGS + [f"--out={out}"], cwd=out.parent)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    assert "epoch   1/3" not in again.stdout and "compiled" not in again.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.json*")} == before
    assert "test_bce" in again.stdout  # still prints the table
    # ... but never as if just made: who made it, and that nothing was written
    record = json.loads((out / "config.json").read_text())
    assert f"made by revision {record['revision'][:12]} on {record['host']}, {record['created']}" in again.stdout
    assert "nothing was written" in again.stdout and "written to" not in again.stdout


def test_cli_refuses_a_different_config_in_a_finished_run_dir(e2e):
    proc, out = e2e
    assert proc.returncode == 0
    before = (out / "metrics.json").read_bytes()
    other = run_cli(["--model=vanilla", "--dataset=digits", "--epochs=4", "--seeds=2", f"--out={out}"], cwd=out.parent)
    assert_one_line_error(other, "differs in epochs", "--force")
    assert (out / "metrics.json").read_bytes() == before


def test_cli_resumes_after_kill_9_to_the_uninterrupted_numbers(tmp_path, digits):
    """SIGKILL a run once its epoch-5 checkpoint exists, rerun it: the same numbers as a run never
    killed (trained in-process with the same configuration)."""
    args = ["--model=vanilla", "--dataset=digits", "--epochs=12", "--seeds=2", "--batch-size=32"]
    killed = tmp_path / "killed"
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cli_command(args + [f"--out={killed}"]), cwd=tmp_path, env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / "5").is_dir():
            assert proc.poll() is None, f"the run ended before its first checkpoint: {stderr.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"

    resumed = run_cli(args + [f"--out={killed}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the checkpoint after epoch" in resumed.stdout
    assert "epoch   1/12" not in resumed.stdout

    cfg = ExperimentConfig(model="vanilla", dataset="digits", epochs=12, seeds=2, batch_size=32)
    clean, _ = run_experiment(cfg, out=tmp_path / "clean", splits=digits, command="in-process", log=lambda m: None)
    killed_metrics = read_json(killed / "metrics.json")
    for key in ("final_train_loss", "final_val_loss", "test_bce"):
        np.testing.assert_allclose(killed_metrics["metrics"][key]["values"], clean["metrics"][key]["values"],
                                   rtol=1e-4, atol=1e-4, err_msg=key)
    ca = read_curves(killed)
    cb = read_curves(tmp_path / "clean")
    assert len(ca) == len(cb) == 12
    np.testing.assert_allclose([c["train_loss"] for c in ca], [c["train_loss"] for c in cb], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([c["val_loss"] for c in ca], [c["val_loss"] for c in cb], rtol=1e-4, atol=1e-4)


def damaged_copy(e2e, tmp_path):
    """A copy of the e2e run folder to damage."""
    import shutil
    proc, out = e2e
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run"


def test_a_damaged_config_json_is_a_one_line_error_and_stays_as_it_is(e2e, tmp_path):
    run = damaged_copy(e2e, tmp_path)
    (run / "config.json").write_text('{"model": "vani')  # cut off mid-write
    proc = run_cli(E2E_ARGS + [f"--out={run}"], cwd=tmp_path)
    assert_one_line_error(proc, "config.json", "not valid JSON", "--force")
    assert (run / "config.json").read_text() == '{"model": "vani'


@pytest.mark.parametrize("name,content", [("metrics.json", "[1, 2]"), ("metrics.json", '{"model": "vanilla"}'),
                                          ("config.json", '"vanilla"')])
def test_a_results_file_of_the_wrong_shape_is_a_one_line_error_and_stays_as_it_is(e2e, tmp_path, name, content):
    """Valid JSON, but not what the run wrote there (another file copied over it, a hand edit)."""
    run = damaged_copy(e2e, tmp_path)
    (run / name).write_text(content)
    proc = run_cli(E2E_ARGS + [f"--out={run}"], cwd=tmp_path)
    assert_one_line_error(proc, name, "not the file ae_jax writes there", "--force")
    assert (run / name).read_text() == content


def test_a_damaged_checkpoint_is_a_one_line_error_naming_it(e2e, tmp_path):
    """The run must resume from its checkpoint (no metrics.json) and cannot read it: one line, no tracebacks
    from the reads still in flight."""
    run = damaged_copy(e2e, tmp_path)
    (run / "metrics.json").unlink()
    chunks = [p for p in (run / "checkpoints" / "3").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks
    for p in chunks:
        p.write_bytes(p.read_bytes()[:100])
    proc = run_cli(E2E_ARGS + [f"--out={run}"], cwd=tmp_path)
    assert_one_line_error(proc, str(run / "checkpoints" / "3"), "cannot be read", "--force")


@pytest.mark.parametrize("when", ["before_the_first_checkpoint", "after_a_checkpoint"])
def test_sigterm_is_answered_like_ctrl_c(tmp_path, when):
    """SIGTERM (a scheduler's stop): exit 143 and one line saying what was kept. Stopped before its first
    checkpoint, the run leaves no folder that would refuse the next command; after one, the folder keeps it.
    The second run has --force, so the line says to rerun without it (with it, the run would start over)."""
    run = tmp_path / "run"
    forced = when == "after_a_checkpoint"
    wait_for = run / ("checkpoints/5" if forced else "config.json")
    args = ["--model=vanilla", "--dataset=digits", "--epochs=400", "--seeds=2", f"--out={run}"] + ["--force"] * forced
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(cli_command(args), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not wait_for.exists():
            assert proc.poll() is None, stderr.read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr.read_text()[-2000:]
    lines = stderr.read_text().strip().splitlines()
    assert "Traceback" not in stderr.read_text() and lines[-1].startswith("terminated: ")
    # what the line says matches what was kept: a checkpoint to resume from, or nothing
    assert ("rerun it without --force to resume" if forced else "nothing was kept; rerun the same command to "
            "start again") in lines[-1]
    assert not (run / "metrics.json").exists()
    if when == "before_the_first_checkpoint":
        assert not (run / "config.json").exists() and not (run / "checkpoints").exists()
    else:
        assert (run / "config.json").exists() and (run / "checkpoints" / "5").is_dir()
    assert not (run / LOCK_NAME).exists()


def folder_bytes(folder) -> dict:
    """Every file under folder (the lock aside) by its relative path, with its content."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != LOCK_NAME}


def test_force_keeps_the_results_it_replaces_until_its_run_is_complete(tmp_path, digits, monkeypatch):
    """--force on a finished run, stopped (1) after its checkpoints, (2) again with --force before any
    checkpoint, (3) once more after its checkpoints and then resumed without --force. The old results sit in
    replaced/ all along; (2) puts them back exactly; the finished retraining alone removes them."""
    import ae_jax.trainer.run as run_module
    run, quiet = tmp_path / "run", (lambda m: None)
    old_cfg = ExperimentConfig(model="vanilla", dataset="digits", epochs=2, seeds=1)
    new_cfg = ExperimentConfig(model="vanilla", dataset="digits", epochs=3, seeds=1)
    run_experiment(old_cfg, out=run, splits=digits, command="old", log=quiet)
    write_json(run / "tasks" / "probe.json", {"seeds": [0], "metrics": {}})  # a study's task file
    old = folder_bytes(run)
    assert any(k.startswith("checkpoints/") for k in old)
    real_train_runs = run_module.train_runs

    def stopped(after_checkpoints: bool):
        def train_runs(*args, **kwargs):
            assert not (run / "metrics.json").exists() and not (run / "tasks").exists()
            if after_checkpoints:
                real_train_runs(*args, **kwargs)
            raise KeyboardInterrupt
        return train_runs

    def set_aside() -> dict:
        return {k.removeprefix("replaced/"): v for k, v in folder_bytes(run).items() if k.startswith("replaced/")}

    monkeypatch.setattr(run_module, "train_runs", stopped(after_checkpoints=True))
    logs = []
    with pytest.raises(KeyboardInterrupt):
        run_experiment(new_cfg, out=run, splits=digits, force=True, command="new", log=logs.append)
    assert any("replaced" in m for m in logs)
    assert interrupted_note(run, "HINT") == "completed epochs are kept in the last checkpoint; HINT"
    assert set_aside() == old  # every file of the finished run, unchanged
    assert read_json(run / "config.json")["epochs"] == 3 and (run / "checkpoints" / "3").is_dir()
    assert not (run / "metrics.json").exists()

    monkeypatch.setattr(run_module, "train_runs", stopped(after_checkpoints=False))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(new_cfg, out=run, splits=digits, force=True, command="new", log=quiet)
    assert folder_bytes(run) == old  # the unfinished retraining is gone, the finished run back in place
    assert interrupted_note(run, "HINT") == f"the complete results in {run} are as they were"
    assert "nothing was kept" in interrupted_note(tmp_path / "never_made", "HINT")
    assert not (run / REPLACED_DIR).exists()

    monkeypatch.setattr(run_module, "train_runs", stopped(after_checkpoints=True))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(new_cfg, out=run, splits=digits, force=True, command="new", log=quiet)
    monkeypatch.setattr(run_module, "train_runs", real_train_runs)
    logs = []
    metrics, _ = run_experiment(new_cfg, out=run, splits=digits, command="new", log=logs.append)
    assert any("resuming from the checkpoint after epoch 3" in m for m in logs)
    assert not (run / REPLACED_DIR).exists() and not (run / "tasks").exists()
    written = read_json(run / "metrics.json")["metrics"]["test_bce"]["values"]
    assert written == metrics["metrics"]["test_bce"]["values"] and len(read_curves(run)) == 3
    assert read_json(run / "config.json")["command"] == "new"


# ------------------------------------------------------------------ metrics.json (no training)
def fake_output(train_curve, val_curve, diverged) -> TrainOutput:
    E = len(train_curve)
    return TrainOutput(state=None, train_curve=np.asarray(train_curve, np.float32),
                       val_curve=np.asarray(val_curve, np.float32), epoch_time=np.full(E, 0.5, np.float32),
                       compile_time_s=1.0, diverged=diverged, resumed_from=0, samples_per_epoch=100,
                       device={"platform": "cpu", "kind": "test", "count": 1})


def fake_test(per_run_bce, n=2):
    """Evaluation output whose per-run mean BCE is per_run_bce (n images each, labels 0..n-1); MSE = BCE / 4."""
    bce = np.repeat(np.asarray(per_run_bce, np.float64)[:, None], n, axis=1)
    return {"bce": bce, "mse": bce / 4}, np.arange(n)


def test_beta_grid_metrics_are_grouped_per_beta():
    cfg = ExperimentConfig(model="beta_vae", dataset="digits", seeds=2, first_seed=5, betas=(0.5, 2.0), epochs=2)
    assert cfg.runs() == [(5, 0.5), (6, 0.5), (5, 2.0), (6, 2.0)]
    curve = [[10.0, 11.0, 20.0, 21.0], [1.0, 2.0, 3.0, 5.0]]
    metrics = result_metrics(cfg, fake_output(curve, curve, {}), *fake_test([7.0, 8.0, 9.0, 10.0]))
    assert metrics["metrics"] is None  # more than one group: no single top-level table
    assert [g["beta"] for g in metrics["groups"]] == [0.5, 2.0]
    assert [g["seeds"] for g in metrics["groups"]] == [[5, 6], [5, 6]]
    g0, g1 = (g["metrics"] for g in metrics["groups"])
    assert g0["final_train_loss"]["values"] == [1.0, 2.0] and g1["final_train_loss"]["values"] == [3.0, 5.0]
    assert g1["final_train_loss"]["mean"] == 4.0 and g1["final_train_loss"]["std"] == pytest.approx(math.sqrt(2))
    assert g1["test_bce"]["values"] == [9.0, 10.0] and g1["test_mse"]["values"] == [2.25, 2.5]
    assert metrics["timing"]["train_time_s"] == pytest.approx(1.0)
    assert metrics["timing"]["seed_samples_per_s"] == pytest.approx(4 * 100 * 2 / 1.0)
    table = format_table(metrics)
    assert "beta = 0.5" in table and "beta = 2" in table


def test_a_run_that_diverged_is_excluded_even_if_its_last_loss_is_finite(tmp_path):
    cfg = ExperimentConfig(model="vae", dataset="digits", seeds=3, epochs=3)
    train = [[5.0, 5.0, 5.0], [4.0, float("nan"), 4.0], [3.0, 2.0, 3.0]]  # run 1 nan in epoch 2 only
    metrics = result_metrics(cfg, fake_output(train, train, {1: 2}), *fake_test([1.0, 100.0, 3.0]))
    assert metrics["diverged"] == [{"run": 1, "seed": 1, "beta": None, "epoch": 2}]
    for key in ("final_train_loss", "test_bce", "test_mse", "test_bce_class0", "test_mse_class1"):
        m = metrics["metrics"][key]
        assert m["n"] == 2 and math.isnan(m["values"][1])
    assert metrics["metrics"]["test_bce"]["mean"] == 2.0  # (1 + 3) / 2, not 104 / 3
    assert "WARNING: seed 1 diverged at epoch 2" in format_table(metrics)
    write_json(tmp_path / "m.json", metrics)  # JSON holds no NaN: null instead
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text
    back = read_json(tmp_path / "m.json")
    assert back["metrics"]["test_bce"]["values"] == [1.0, None, 3.0]


def test_result_metrics_leaves_the_training_curves_alone():
    # run_experiment writes curves.jsonl from the same TrainOutput after computing the metrics
    cfg = ExperimentConfig(model="vae", dataset="digits", seeds=2, epochs=2)
    train = [[5.0, float("nan")], [4.0, 6.0]]  # run 1 diverged in epoch 1, finite again in epoch 2
    out = fake_output(train, train, {1: 1})
    result_metrics(cfg, out, *fake_test([1.0, 2.0]))
    np.testing.assert_array_equal(out.train_curve, np.asarray(train, np.float32))
    np.testing.assert_array_equal(out.val_curve, np.asarray(train, np.float32))


def test_per_class_metrics_are_the_class_means_of_each_runs_errors():
    """result_metrics' test_{bce,mse}_class<d> against numpy, and their class-count-weighted mean is test_{bce,mse}."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, NUM_CLASSES, 300)
    test = {"bce": rng.gamma(3.0, 20.0, size=(2, 300)), "mse": rng.gamma(2.0, 5.0, size=(2, 300))}
    cfg = ExperimentConfig(model="vanilla", dataset="digits", seeds=2, epochs=1)
    m = result_metrics(cfg, fake_output([[1.0, 2.0]], [[1.0, 2.0]], {}), test, y)["metrics"]
    counts = np.bincount(y, minlength=NUM_CLASSES)
    for k in ("bce", "mse"):
        assert m[f"test_{k}"]["values"] == pytest.approx(test[k].mean(1).tolist(), rel=1e-12)
        for d in range(NUM_CLASSES):
            assert m[f"test_{k}_class{d}"]["values"] == pytest.approx(test[k][:, y == d].mean(1).tolist(), rel=1e-12)
        per = np.array([m[f"test_{k}_class{d}"]["values"] for d in range(NUM_CLASSES)])
        np.testing.assert_allclose(counts @ per / len(y), m[f"test_{k}"]["values"], rtol=1e-12)


def test_aggregate_uses_sample_std_over_finite_values():
    m = aggregate([1.0, 3.0, float("inf"), float("nan")])
    assert (m["mean"], m["n"]) == (2.0, 2) and m["std"] == pytest.approx(math.sqrt(2))
    one = aggregate([4.0])
    assert one["mean"] == 4.0 and math.isnan(one["std"])


def test_run_experiment_validates_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="--seeds"):
        run_experiment(ExperimentConfig(model="vanilla", seeds=0), out=tmp_path / "r", log=lambda m: None)
    with pytest.raises(ConfigError, match="finite"):
        run_experiment(ExperimentConfig(model="vae", betas=(float("inf"),)), out=tmp_path / "r", log=lambda m: None)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ run identity
def test_config_json_records_the_beta_a_model_trains_with_when_no_beta_is_given():
    strict = config_record(ExperimentConfig(model="beta_vae_strict", dataset="digits"), "cmd")
    assert strict["betas"] is None and strict["model_hparams"]["beta"] == 2.0
    denoising = config_record(ExperimentConfig(model="denoising", dataset="digits"), "cmd")
    assert denoising["model_hparams"]["noise_std"] == 0.5


def test_loss_precision_and_widths_each_get_their_own_run_folder():
    base = ExperimentConfig(model="vanilla", dataset="digits")
    variants = {"bce": base, "mse": ExperimentConfig(model="vanilla", dataset="digits", loss="mse"),
                "fast": ExperimentConfig(model="vanilla", dataset="digits", precision="fast"),
                "mse_fast": ExperimentConfig(model="vanilla", dataset="digits", loss="mse", precision="fast"),
                "n2": ExperimentConfig(model="vanilla", dataset="digits", latent_dim=2),
                "n2_fixed": ExperimentConfig(model="vanilla", dataset="digits", latent_dim=2, widths="fixed")}
    names = {k: c.name() for k, c in variants.items()}
    assert len(set(names.values())) == len(names), names
    assert names["bce"] == "vanilla" and names["mse"] == "vanilla_mse"
    # at n = 20 the fixed widths are the protocol's: the same run, the same folder
    assert ExperimentConfig(model="vanilla", dataset="digits", widths="fixed").name() == names["bce"]
    for k in ("loss", "precision", "width_latent"):
        assert k in IDENTITY


def record_without(cfg, *keys) -> dict:
    rec = config_record(cfg, "python experiments/run.py", load_splits("digits"))
    for k in keys:
        rec.pop(k)
    return rec


@pytest.mark.parametrize("recorded,asked,what", [
    ({"loss": "mse"}, {}, "loss"),
    ({}, {"loss": "mse"}, "loss"),
    ({"precision": "fast"}, {}, "precision"),
    ({}, {"precision": "fast"}, "precision"),
], ids=["mse_folder_bce_asked", "bce_folder_mse_asked", "fast_folder", "float32_folder"])
def test_run_experiment_refuses_a_folder_made_with_another_loss_or_precision(tmp_path, digits, recorded, asked, what):
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "config.json", config_record(ExperimentConfig(model="vanilla", dataset="digits", **recorded),
                                                    "earlier", digits))
    write_json(run / "metrics.json", {"model": "vanilla"})
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    cfg = ExperimentConfig(model="vanilla", dataset="digits", **asked)
    with pytest.raises(ConfigError, match=f"differs in {what}"):
        run_experiment(cfg, out=run, splits=digits, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


def test_an_older_config_without_loss_precision_or_version_counts_as_bce_float32(tmp_path, digits):
    """A folder written before these keys existed was trained with BCE at full float32: a bce/float32 request
    reuses it (its metrics.json is returned, nothing retrained); an mse or fast request is refused."""
    run = tmp_path / "old"
    run.mkdir()
    old = record_without(ExperimentConfig(model="vanilla", dataset="digits"), "loss", "precision", "version",
                         "revision", "widths", "width_latent", "data")
    write_json(run / "config.json", old)
    write_json(run / "metrics.json", {"model": "vanilla", "marker": 17, "groups": [], "timing": {}, "device": "cpu",
                                      "diverged": []})
    logs = []
    metrics, where = run_experiment(ExperimentConfig(model="vanilla", dataset="digits"), out=run, splits=digits,
                                    log=logs.append)
    assert metrics["marker"] == 17 and where == run and any("already complete" in m for m in logs)
    check_same_config(run, ExperimentConfig(model="vanilla", dataset="digits"), digits)  # no error
    for other, what in ((dict(loss="mse"), "loss"), (dict(precision="fast"), "precision")):
        with pytest.raises(ConfigError, match=f"differs in {what}"):
            check_same_config(run, ExperimentConfig(model="vanilla", dataset="digits", **other), digits)


def test_a_folder_made_from_other_data_is_refused(tmp_path, digits):
    run = tmp_path / "run"
    write_json(run / "config.json", config_record(ExperimentConfig(model="vanilla", dataset="digits"), "", digits))
    shuffled = digits._replace(x_train=digits.x_train[::-1].copy())
    with pytest.raises(ConfigError, match="data"):
        check_same_config(run, ExperimentConfig(model="vanilla", dataset="digits"), shuffled)


def test_a_run_folder_in_use_is_refused_with_one_line_and_left_alone(tmp_path):
    """A live process holds the folder's lock: a second run says who, exits 2 and writes nothing."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (out / LOCK_NAME).write_text(f"{socket.gethostname()} {holder.pid}\n")
        proc = run_cli(E2E_ARGS + [f"--out={out}"], cwd=tmp_path)
        assert_one_line_error(proc, "in use by process", str(holder.pid), LOCK_NAME)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid no longer runs
    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {gone.pid}\n")
    with folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split() == [socket.gethostname(), str(os.getpid())]
        with pytest.raises(ConfigError, match="in use by process"):  # not twice, not even by its holder
            with folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("error,fragments", [
    (PermissionError(13, "Permission denied", "/results/x"), ["/results/x", "Permission denied"]),
    (OSError(28, "No space left on device", "/results/metrics.json"), ["/results/metrics.json", "No space left"]),
    (MemoryError("Unable to allocate 80. GiB"), ["out of host memory", "80. GiB"]),
])
def test_what_the_system_refuses_is_a_one_line_error(capsys, error, fragments):
    def body():
        raise error

    with pytest.raises(SystemExit) as exit_info:
        guarded(body, "rerun to resume")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(f in err[0] for f in fragments), err


def test_an_os_error_without_a_path_is_not_hidden():
    def body():
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(ConnectionResetError):
        guarded(body, "rerun to resume")


def test_out_of_memory_becomes_a_one_line_hint_and_other_errors_propagate(capsys):
    def oom():
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes.")

    with pytest.raises(SystemExit) as exit_info:
        guarded(oom, "rerun to resume")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of device memory" in err[0] and "--seeds" in err[0] and "rerun to resume" in err[0]

    def bug():
        raise jax.errors.JaxRuntimeError("INVALID_ARGUMENT: a real bug")

    with pytest.raises(jax.errors.JaxRuntimeError, match="a real bug"):
        guarded(bug, "rerun to resume")


def test_sigterm_met_inside_a_garbage_collection_callback_still_stops_the_script():
    """Python may run the handler inside a gc callback (jax registers one), where a raised exception is printed
    and dropped: the handler sends the signal again instead, and the script still stops with Terminated."""
    code = textwrap.dedent("""
        import gc, os, signal, sys, time
        from ae_jax.cli import Terminated, _terminate
        signal.signal(signal.SIGTERM, _terminate)
        def callback(phase, info):
            if phase == "start" and not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the callback
                for _ in range(1000):
                    pass
        sent = []
        gc.callbacks.append(callback)
        try:
            gc.collect()
            gc.callbacks.remove(callback)
            time.sleep(10)
        except Terminated:
            print("stopped", len(sent))
            sys.exit(143)
        sys.exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout.strip()) == (143, "stopped 1"), out.stderr[-2000:]
    assert "Exception ignored" not in out.stderr

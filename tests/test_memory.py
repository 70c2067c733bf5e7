"""How many runs fit a device: XLA's memory figures, the estimate, and the one-line out-of-memory error.

The estimate is tested on made-up figures (a fake memory analysis and a fake
device limit); the programs' own figures on the real compiled epoch and
evaluation programs; the error end to end through experiments/run.py with an
out-of-memory error raised where the data goes onto the device.
"""
from __future__ import annotations

import json
import types

import jax
import pytest

from _helpers import RUN_PY, load_script
from ae_jax.models import get_model
from ae_jax.trainer import (OutOfMemory, TrainConfig, epoch_memory, eval_memory, evaluate_runs, init_state, run_keys,
                            spec_hparams)
from ae_jax.trainer import loop, memory
from ae_jax.trainer.memory import (GIB, MIB, ProgramMemory, device_memory_limit, fit_per_run, hint_out_of_memory,
                                   is_out_of_memory, largest_run_count, out_of_memory_message, program_memory)
from ae_jax.trainer.folder import _forget_unstarted

XLA_OOM = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456789 bytes."


def fake_analysis(arg, out, alias, temp):
    stats = types.SimpleNamespace(argument_size_in_bytes=arg, output_size_in_bytes=out, alias_size_in_bytes=alias,
                                  temp_size_in_bytes=temp)
    return types.SimpleNamespace(memory_analysis=lambda: stats)


def fake_device(platform, stats):
    return types.SimpleNamespace(platform=platform, memory_stats=lambda: stats)


# ----------------------------------------------------------------------------- the estimate, on made-up figures

def test_a_program_holds_its_arguments_new_outputs_and_temporaries():
    m = program_memory(fake_analysis(arg=1000, out=700, alias=600, temp=50))
    assert m == ProgramMemory(1000, 700, 600, 50)
    assert m.total == 1000 + 100 + 50  # the 600 donated bytes the output reuses count once
    assert program_memory(types.SimpleNamespace(memory_analysis=lambda: None)) is None

    def unsupported():
        raise NotImplementedError("no memory analysis on this backend")
    assert program_memory(types.SimpleNamespace(memory_analysis=unsupported)) is None


def test_the_cost_per_run_is_the_slope_and_the_shared_part_the_intercept():
    assert fit_per_run([1, 4], [30 * MIB, 90 * MIB]) == pytest.approx((10 * MIB, 20 * MIB))
    shared, per_run = fit_per_run([1, 2, 4, 8], [12 + 5 * r + (0.5 if r == 4 else 0) for r in (1, 2, 4, 8)])
    assert per_run == pytest.approx(5, abs=0.1) and shared == pytest.approx(12, abs=0.5)  # least squares
    assert fit_per_run([2, 4], [100, 100]) == (0.0, 25.0)  # no slope to see: everything charged to the runs
    with pytest.raises(ValueError, match="two different"):
        fit_per_run([3, 3], [1, 2])


def test_the_largest_count_fills_each_device_and_multiplies_by_the_devices():
    assert largest_run_count(shared=10, per_run=20, limit=10 + 20 * 7 + 19) == 7
    assert largest_run_count(shared=10, per_run=20, limit=10 + 20 * 7, devices=8) == 56
    assert largest_run_count(shared=100, per_run=20, limit=90) == 0
    with pytest.raises(ValueError):
        largest_run_count(0, 0, 100)


def test_the_device_limit_is_the_allocators_else_the_machines_ram():
    assert device_memory_limit(fake_device("gpu", {"bytes_limit": 60 * GIB, "peak_bytes_in_use": 1})) == 60 * GIB
    ram = device_memory_limit(fake_device("cpu", None))
    assert ram is not None and ram > 256 * MIB
    assert device_memory_limit(fake_device("tpu", None)) is None
    assert memory.device_peak_bytes(fake_device("gpu", {"peak_bytes_in_use": 123})) == 123
    assert memory.device_peak_bytes(fake_device("cpu", None)) is None


def test_the_message_names_the_largest_count_or_says_why_it_cannot():
    line = out_of_memory_message("training", 64, 1, shared=6 * MIB, per_run=25 * MIB, limit=GIB)
    assert "at most 40 runs fit" in line and "seeds x betas <= 40" in line and "\n" not in line
    assert "at most 320 runs fit 8 devices" in out_of_memory_message("training", 512, 8, 6 * MIB, 25 * MIB, GIB)
    assert "not even one run" in out_of_memory_message("training", 4, 1, 2 * GIB, 25 * MIB, GIB)
    assert "fewer than 8 runs" in out_of_memory_message("training", 8, 1, 6 * MIB, 25 * MIB, GIB)
    assert "no memory figures" in out_of_memory_message("evaluating", 8, 1, None, None, GIB)


def test_only_allocation_failures_count_as_out_of_memory():
    assert is_out_of_memory(jax.errors.JaxRuntimeError(XLA_OOM)) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(jax.errors.JaxRuntimeError("INVALID_ARGUMENT: a real bug"))
    assert not is_out_of_memory(ValueError("RESOURCE_EXHAUSTED"))


def test_the_decorator_measures_at_one_run_and_the_failing_count(monkeypatch):
    measured = []

    def measure(arguments, r):
        measured.append((arguments["n"], r))
        return ProgramMemory(argument=4 * MIB + r * 10 * MIB, output=r * 8 * MIB, alias=r * 8 * MIB,
                             temp=r * 5 * MIB)

    @hint_out_of_memory("training", measure, lambda a: a["n"], lambda n: 1)
    def train(n, error=None):
        raise error

    monkeypatch.setattr(memory, "device_memory_limit", lambda device: 4 * MIB + 15 * MIB * 9 + MIB)
    with pytest.raises(OutOfMemory, match=r"at most 9 runs fit.*seeds x betas <= 9") as info:
        train(12, error=jax.errors.JaxRuntimeError(XLA_OOM))
    assert measured == [(12, 1), (12, 12)] and isinstance(info.value.__cause__, jax.errors.JaxRuntimeError)
    with pytest.raises(ZeroDivisionError):  # not an allocation failure: untouched
        train(12, error=ZeroDivisionError())

    def broken(arguments, r):
        raise RuntimeError("compiling failed too")

    def train_unmeasurable(n, error=None):
        raise error

    with pytest.raises(OutOfMemory, match="no memory figures"):
        hint_out_of_memory("training", broken, lambda a: a["n"], lambda n: 1)(train_unmeasurable)(3, MemoryError())


def test_a_large_count_that_cannot_fit_is_refused_before_it_starts_and_a_small_one_is_not_measured(monkeypatch):
    measured = []

    def measure(r):
        measured.append(r)
        return ProgramMemory(argument=4 * MIB + r * 10 * MIB, output=r * 8 * MIB, alias=r * 8 * MIB, temp=r * 5 * MIB)

    monkeypatch.setattr(memory, "device_memory_limit", lambda device: 4 * MIB + 15 * MIB * 100)  # 100 runs fit
    memory.refuse_what_cannot_fit("training", measure, memory.CHECK_ABOVE_RUNS, 1)  # small: not even measured
    assert measured == []
    memory.refuse_what_cannot_fit("training", measure, 100, 1)  # large, but fits
    assert measured == [1, 2]
    with pytest.raises(OutOfMemory, match=r"training 101 run\(s\).*cannot fit in device memory.*at most 100 runs"):
        memory.refuse_what_cannot_fit("training", measure, 101, 1)
    memory.refuse_what_cannot_fit("training", measure, 200, 2)  # two devices of 100 each: fits
    with pytest.raises(OutOfMemory, match="at most 200 runs fit 2 devices"):
        memory.refuse_what_cannot_fit("training", measure, 201, 2)
    memory.refuse_what_cannot_fit("training", lambda r: None, 10 ** 6, 1)  # no figures: let the device say


# ----------------------------------------------------------------------------- the compiled programs' own figures

def state_bytes(spec, cfg, adam: bool = True) -> int:
    """One run's train state: parameters, BatchNorm statistics and (unless not adam) the Adam moments."""
    st = jax.eval_shape(lambda k: init_state(spec, cfg, k), run_keys(0)["init"])
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(st if adam else st[:2]))


def test_the_epoch_program_holds_the_data_once_and_a_state_per_run(digits):
    """(On the whole digits split at 1 and 4 runs: the very programs the end-to-end test below measures.)"""
    from ae_jax.data import train_data, val_data
    train, val = train_data(digits), val_data(digits)
    spec, cfg = get_model("beta_vae"), TrainConfig(epochs=1)
    images = train.x.nbytes + val.x.nbytes  # the labels are no argument: beta_vae never reads them
    one, four = (epoch_memory(spec, cfg, r, train, val) for r in (1, 4))
    per_state = state_bytes(spec, cfg)
    for r, m in ((1, one), (4, four)):
        assert m.argument >= images + r * per_state
        assert m.alias >= r * per_state  # the donated state is updated in place
    shared, per_run = fit_per_run([1, 4], [one.total, four.total])
    assert per_run >= per_state  # each run adds at least its own parameters and Adam moments
    assert shared < images + per_state


def test_the_evaluation_program_adds_a_state_and_its_outputs_per_run(tiny):
    _, val = tiny
    spec, cfg = get_model("vanilla"), TrainConfig(epochs=1)
    one, two = eval_memory(spec, cfg, 1, val), eval_memory(spec, cfg, 2, val)
    n = val.x.shape[0]
    outputs = n * (4 + 20 + 20) * 4  # bce, mse, loss, signed_error; h [n, 20]; z [n, 20] (float32)
    assert two.output - one.output == outputs
    # evaluation reads no Adam moments (XLA drops unread arguments)
    assert state_bytes(spec, cfg, adam=False) <= two.argument - one.argument < state_bytes(spec, cfg)
    assert two.total - one.total >= state_bytes(spec, cfg, adam=False) + outputs


def test_evaluation_out_of_memory_names_a_count(tiny, monkeypatch):
    _, val = tiny
    spec, cfg = get_model("vanilla"), TrainConfig(epochs=1)

    def oom(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(XLA_OOM)

    monkeypatch.setattr(loop, "map_runs", oom)
    one, two = eval_memory(spec, cfg, 1, val), eval_memory(spec, cfg, 2, val)
    shared, per_run = fit_per_run([1, 2], [one.total, two.total])
    monkeypatch.setattr(memory, "device_memory_limit", lambda device: int(shared + 1.5 * per_run))
    n_dev = len(loop.RunAxis(2).devices)  # one run per device fits: n_dev runs in all
    named = f"at most {n_dev} runs fit" if n_dev < 2 else f"up to {n_dev} runs would fit"
    with pytest.raises(OutOfMemory, match=rf"evaluating 2 run\(s\).* so {named}"):
        evaluate_runs(spec, cfg, None, [0, 1], [spec_hparams(spec)] * 2, val)


# ----------------------------------------------------------------------------- end to end

def test_out_of_memory_in_training_exits_2_naming_a_count_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """2 seeds x 2 betas fail on the device; the one line names the count that fits a made-up limit of 3.5 runs,
    and the run folder is gone, so the smaller run it suggests starts without --force."""
    from ae_jax.data import load_splits, train_data, val_data
    splits = load_splits("digits")
    spec, cfg = get_model("beta_vae"), TrainConfig(epochs=1)
    per_dev = memory.runs_per_device(4, len(loop.RunAxis(4).devices))
    counts = (1, max(2, per_dev))
    shared, per_run = fit_per_run(counts, [epoch_memory(spec, cfg, r, train_data(splits), val_data(splits)).total
                                           for r in counts])
    monkeypatch.setattr(memory, "device_memory_limit", lambda device: int(shared + 3.5 * per_run))

    def oom_on_the_device(self, tree):
        raise jax.errors.JaxRuntimeError(XLA_OOM)

    monkeypatch.setattr(loop.RunAxis, "share", oom_on_the_device)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        load_script(RUN_PY).main(["--model=beta_vae", "--dataset=digits", "--beta=1,2", "--seeds=2", "--epochs=1",
                                f"--out={out}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    n_dev = len(loop.RunAxis(4).devices)
    assert len(err) == 1 and "out of device memory training 4 run(s)" in err[0], err
    if 3 * n_dev < 4:  # one device: a count below the failing one
        assert f"at most {3 * n_dev} runs fit" in err[0] and f"seeds x betas <= {3 * n_dev}" in err[0], err
    else:  # forced host devices: 3 runs on each would hold 4 runs, so something else must hold the memory
        assert f"up to {3 * n_dev} runs would fit {n_dev} devices" in err[0] and "fewer than 4 runs" in err[0], err
    assert not out.exists()


def test_a_run_with_a_saved_epoch_keeps_what_resume_needs(tmp_path):
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({"model": "vanilla"}))
    _forget_unstarted(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "checkpoints" / "5").is_dir()
    (tmp_path / "checkpoints" / "5").rmdir()
    _forget_unstarted(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

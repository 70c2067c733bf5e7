"""benchmarks/throughput.py at toy sizes: it runs, its JSON holds consistent figures, bad flags fail in one line.

Speed itself is not asserted here (the figures depend on the machine and its load); the script
prints its targets as PASS/FAIL.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _helpers import REPO, assert_one_line_error, subprocess_env

SCRIPT = REPO / "benchmarks" / "throughput.py"
TOY = ["--n-train=512", "--n-val=64", "--epochs=1", "--seeds-list=1,2", "--skip-torch", "--peak-sizes=64",
       "--repeats=1"]


def run(args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "throughput.json"
    proc = run(TOY + [f"--out={out}"], REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_every_seed_count_is_measured_with_its_floor(toy):
    proc, res = toy
    fps = res["flops"]["train_per_sample"]
    peak = res["matmul_peak"]["jax"]["peak_gflops"]
    assert [r["seeds"] for r in res["ae_jax"]] == [1, 2]
    for r in res["ae_jax"]:
        assert r["seed_samples_per_s"] > 0 and r["compile_time_s"] > 0 and r["diverged_runs"] == 0
        assert r["seed_samples_per_s"] == pytest.approx(r["seeds"] * 512 * 1 / r["train_time_s"])
        assert r["gflops"] == pytest.approx(r["seed_samples_per_s"] * fps / 1e9)
        assert r["pct_of_peak"] == pytest.approx(100 * r["gflops"] / peak)
        fl = r["floor"]
        assert fl["seeds"] == r["seeds"] and fl["matmul_s"] > 0 and fl["adam_s"] > 0
        assert fl["bound_seed_samples_per_s"] == pytest.approx(r["seeds"] * 256 / (fl["matmul_s"] + fl["adam_s"]))
        assert fl["parameters"] == r["seeds"] * res["flops"]["sum_in_times_out"] + r["seeds"] * (
            4 * (341 + 113) + 20 + 1024)  # kernels, BatchNorm scale and bias, the two output biases
    assert res["torch"] is None and "skip" in res["torch_skipped"]
    assert [t["status"] for t in res["targets"]] == ["NOT MEASURED"] * 2 + [res["targets"][2]["status"]]
    assert "bound %" in proc.stdout and "targets (reported, not asserted)" in proc.stdout


def test_flop_count_follows_the_protocol_layer_sizes(toy):
    _, res = toy
    assert res["flops"]["layers"] == ["1024->341", "341->113", "113->20", "20->113", "113->341", "341->1024"]
    assert res["flops"]["sum_in_times_out"] == 779_954
    assert res["flops"]["train_per_sample"] == 3 * 2 * 779_954


@pytest.mark.parametrize("args,fragment", [(["--seeds-list=0"], "--seeds-list"), (["--epochs=0"], "--epochs"),
                                           (["--n-train=10"], "--n-train"), (["--out=/no/such/dir/x.json"], "--out")])
def test_bad_flags_fail_in_one_line(tmp_path, args, fragment):
    assert_one_line_error(run(args, tmp_path), fragment)

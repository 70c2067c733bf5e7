"""benchmarks/run_count.py at tiny counts: it runs end to end, its JSON holds consistent figures, bad flags fail
in one line. No speed is asserted (the figures depend on the machine and its load)."""
from __future__ import annotations

import math

import pytest

from _helpers import REPO, assert_one_line_error, load_script, run_script, run_script_json

SCRIPT = REPO / "benchmarks" / "run_count.py"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return run_script_json(SCRIPT, ["--counts=2,1", "--epochs=1", "--fit-gib=0.25,80"],
                           tmp_path_factory.mktemp("bench") / "run_count.json", timeout=900)


def test_every_count_is_trained_and_measured(sweep):
    proc, res = sweep
    assert res["complete"] is True
    rows = res["rows"]
    assert [r["runs"] for r in rows] == [1, 2]  # ascending, whatever order they were given in
    assert [(r["seeds"], r["betas"]) for r in rows] == [(1, [0.25]), (1, [0.25, 0.5])]
    n_train = res["settings"]["n_train"]
    for r in rows:
        assert r["epochs_timed"] == 1 == len(r["epoch_time_s"])  # one epoch: it is the one timed
        assert r["samples_per_epoch_per_seed"] == n_train // 256 * 256
        assert r["seed_samples_per_s"] == pytest.approx(r["runs"] * r["samples_per_epoch_per_seed"]
                                                        / r["epoch_time_s"][0])
        assert r["compile_time_s"] > 0 and r["diverged_runs"] == 0
        assert r["device"]["count"] == r["devices"] and r["runs_per_device"] == -(-r["runs"] // r["devices"])
        m = r["program_memory"]
        assert m["total_bytes"] == m["argument_bytes"] + m["output_bytes"] - m["alias_bytes"] + m["temp_bytes"]
        assert r["program_bytes_per_run"] == pytest.approx(m["total_bytes"] / r["runs_per_device"])
    env = res["environment"]
    assert "run_count.py" in env["command"] and "--counts=2,1" in env["command"] and env["jax_version"]
    assert "seed-samples/s" in proc.stdout and "largest run count that fits" in proc.stdout


def test_the_memory_per_run_and_the_largest_counts_follow_the_measured_programs(sweep):
    _, res = sweep
    rows = res["rows"]
    if rows[0]["runs_per_device"] == rows[1]["runs_per_device"]:
        pytest.skip("1 and 2 runs are one run per device here: no slope to fit")
    one, two = (r["program_memory"]["total_bytes"] for r in rows)
    fit = res["fit"]
    assert two > one
    assert fit["bytes_per_run"] == pytest.approx(two - one)
    assert fit["intercept_bytes"] == pytest.approx(2 * one - two)
    assert fit["shared_bytes"] == pytest.approx(max(0.0, 2 * one - two))
    sizes = {x["memory"]: x for x in res["fits"]}
    for gib in (0.25, 80):
        x = sizes[f"one device of {gib:g} GiB"]
        assert x["limit_bytes"] == int(gib * 2 ** 30)
        assert x["largest_runs"] == math.floor((x["limit_bytes"] - fit["shared_bytes"]) / fit["bytes_per_run"])
    assert sizes["one device of 0.25 GiB"]["largest_runs"] < sizes["one device of 80 GiB"]["largest_runs"]
    here = [x for x in res["fits"] if x["memory"].startswith("this machine")]
    assert len(here) == 1 and here[0]["largest_runs"] % here[0]["devices"] == 0


def test_counts_are_seeds_times_betas_with_as_many_betas_as_divide():
    b = load_script(SCRIPT)
    assert [b.seeds_x_betas(c, 8) for c in (1, 2, 4, 8, 16, 32, 64)] == [
        (1, b.BETAS[:1]), (1, b.BETAS[:2]), (1, b.BETAS[:4]), (1, b.BETAS[:8]), (2, b.BETAS), (4, b.BETAS),
        (8, b.BETAS)]
    assert b.seeds_x_betas(12, 8) == (3, b.BETAS[:4]) and b.seeds_x_betas(5, 8) == (5, b.BETAS[:1])
    assert b.seeds_x_betas(64, 1) == (64, b.BETAS[:1])
    assert b.steady_rate(3, 100, [9.0, 1.0, 2.0]) == (3 * 100 * 2 / 3.0, 2)  # the first epoch left out
    assert b.steady_rate(3, 100, [2.0]) == (150.0, 1)


@pytest.mark.parametrize("args,fragment", [(["--counts=0"], "--counts"), (["--counts=2,2"], "repeated"),
                                           (["--epochs=0"], "--epochs"), (["--max-betas=9"], "--max-betas"),
                                           (["--fit-gib=0"], "--fit-gib"), (["--dataset=cifar"], "cifar"),
                                           (["--out=/no/such/dir/x.json"], "--out"), (["--out=/tmp"], "is a folder"),
                                           (["--fit-gib=inf"], "finite"),
                                           (["--dataset=mnist", "--data-dir=/no/such/dir"], "no such folder")])
def test_bad_flags_fail_in_one_line(tmp_path, args, fragment):
    assert_one_line_error(run_script(SCRIPT, args, tmp_path, 900), fragment)
    assert not list(tmp_path.iterdir())

"""experiments/sweep.py end to end on digits: a 2 x 2 grid trained in one program, every point through its tasks,
the report (a table per point, the heatmap from its saved arrays, the best point against the runner-up), and a
rerun that reuses everything."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from _helpers import REPO, assert_one_line_error, run_here
from ae_jax.studies.report import paired

SWEEP_PY = REPO / "experiments" / "sweep.py"
GRID = ["--model=sparse", "--dataset=digits", "--seeds=2", "--epochs=1", "--sparsity=0.05,0.25", "--lr=1e-3,3e-3",
        "--tasks=reconstruction,probe"]
RUN = "sparse_sparsity0.05,0.25_e1_lr0.001,0.003"
POINTS = ["sparsity = 0.05, lr = 0.001", "sparsity = 0.05, lr = 0.003",
          "sparsity = 0.25, lr = 0.001", "sparsity = 0.25, lr = 0.003"]
# each point's folder is named as its own run would be (lr 1e-3 is the default: not in the name)
POINT_DIRS = ["sparse_sparsity0.05_e1", "sparse_sparsity0.05_e1_lr0.003", "sparse_sparsity0.25_e1",
              "sparse_sparsity0.25_e1_lr0.003"]


def test_sweep_end_to_end_on_digits_with_a_2x2_grid(tmp_path, capsys):
    root = tmp_path / "root"
    proc = run_here(SWEEP_PY, GRID + [f"--out={root}"], capsys)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    assert "training 4 grid points x 2 seed(s) in one program" in proc.stdout
    # one program for every point and seed (compiled, or loaded from the suite's compilation cache)
    assert len(re.findall(r"(compiled|loaded from the compilation cache) the epoch program", proc.stdout)) == 1
    run = json.loads((root / RUN / "metrics.json").read_text())
    out = root / "sweeps" / RUN
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["points"]) == POINTS and summary["axes"] == {"sparsity": [0.05, 0.25], "lr": [0.001, 0.003]}
    for k, label in enumerate(POINTS):
        entry = summary["points"][label]
        # the grid's block for this point, and its tasks, each over the two seeds; the reconstruction task
        # evaluates the point's slice of the grid's state: the numbers the grid's program gave
        assert entry["test_bce"]["values"] == run["groups"][k]["metrics"]["test_bce"]["values"]
        recon = json.loads((root / RUN / "points" / POINT_DIRS[k] / "tasks" / "reconstruction.json").read_text())
        assert recon["seeds"] == [0, 1] and recon["metrics"]["test_bce"]["values"] == entry["test_bce"]["values"]
        assert len(entry["probe_accuracy"]["values"]) == 2
        point = json.loads((root / RUN / "points" / POINT_DIRS[k] / "metrics.json").read_text())
        assert point["groups"] == [run["groups"][k]] and point["runs"] == run["runs"][2 * k:2 * k + 2]
    # the best point and the paired test against the runner-up, from the summary's own numbers
    means = {p: summary["points"][p]["test_bce"]["mean"] for p in POINTS}
    order = sorted(means, key=means.get)
    best = summary["best"]
    assert best["best"] == order[0] and best["runner_up"] == order[1] and best["test"] == "paired t-test"
    want = paired(summary["points"][order[0]]["test_bce"]["values"], summary["points"][order[1]]["test_bce"]["values"])
    assert (best["p"] is None and np.isnan(want)) or best["p"] == pytest.approx(want)
    # the heatmap's arrays: rows sparsity, columns lr, each cell the point's mean and std
    arrays = np.load(out / "fig_heatmap.npz")
    assert arrays["mean"].shape == (2, 2) and list(arrays["rows"]) == [0.05, 0.25]
    for k, label in enumerate(POINTS):
        assert arrays["mean"][k // 2, k % 2] == pytest.approx(means[label])
        assert arrays["std"][k // 2, k % 2] == pytest.approx(summary["points"][label]["test_bce"]["std"])
    assert (out / "fig_heatmap.png").stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert all(f"### {p}" in readme for p in POINTS) and "paired t-test" in readme
    # a rerun reuses the trained grid and every task: nothing trains, nothing is rewritten
    before = {p: p.stat().st_mtime_ns for p in (root / RUN).rglob("tasks/*.json")}
    assert len(before) == 8
    again = run_here(SWEEP_PY, GRID + [f"--out={root}"], capsys)
    assert again.returncode == 0, again.stderr
    assert "trained already" in again.stdout and ": task " not in again.stdout
    assert "the epoch program" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (root / RUN).rglob("tasks/*.json")} == before
    assert json.loads((out / "summary.json").read_text())["points"] == summary["points"]


@pytest.mark.parametrize("args,fragments", [
    (["--model=sparse", "--sparsity=0.1"], ["at least two points"]),
    (["--model=vae", "--noise-std=0.1,0.2"], ["--noise-std", "denoising"]),
    (["--model=vae", "--beta=1,2", "--metric=nonsense"], ["--metric", "test_bce"]),
    (["--model=vae", "--beta=1,2", "--tasks=reconstruction,scratch"], ["scratch", "baseline"]),
])
def test_bad_sweep_flags_exit_2_with_one_line(tmp_path, capsys, args, fragments):
    out = tmp_path / "root"
    proc = run_here(SWEEP_PY, args + ["--dataset=digits", "--seeds=2", "--epochs=1", f"--out={out}"], capsys)
    assert_one_line_error(proc, *fragments)
    assert not out.exists()

"""What every study's report shares: mean ± std cells, significance over seeds, tables, provenance."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .. import __version__

SIGNIFICANCE = 0.05


def _fmt(v: float | None, std: float | None = None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    d = 4 if abs(v) < 10 else (2 if abs(v) < 1000 else 0)
    s = f"{v:.{d}f}"
    if std is not None and math.isfinite(std):
        s += f" ± {std:.{d}f}"
    return s


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of a vs b (nan if either has < 2 finite values or no spread)."""
    from scipy import stats
    a = np.asarray([x for x in a if x is not None and math.isfinite(x)])
    b = np.asarray([x for x in b if x is not None and math.isfinite(x)])
    if len(a) < 2 or len(b) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant sample (shared wall-clock)
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def ranking(summary: dict, metric: str, higher: bool) -> list[str]:
    have = [m for m in summary if metric in summary[m] and summary[m][metric]["mean"] is not None]
    return sorted(have, key=lambda m: summary[m][metric]["mean"], reverse=higher)


def best_line(summary: dict, metric: str, higher: bool) -> str:
    order = ranking(summary, metric, higher)
    if len(order) < 2:
        return ""
    a, b = order[0], order[1]
    p = welch(summary[a][metric]["values"], summary[b][metric]["values"])
    if not math.isfinite(p):
        return f"{a} ahead of {b} (no test possible)"
    verdict = "significant" if p < SIGNIFICANCE else "not significant"
    return f"{a} vs {b}: Welch p = {p:.2g} ({verdict})"


def task_table(summary: dict, rows: list, models: Sequence[str]) -> str:
    cols = [m for m in models if any(r[0] in summary.get(m, {}) for r in rows)]
    if not cols:
        return ""
    out = ["| metric | " + " | ".join(cols) + " | best vs runner-up |",
           "|---|" + "---|" * (len(cols) + 1)]
    for metric, label, higher in rows:
        best = ranking(summary, metric, higher)[0] if higher is not None and ranking(summary, metric, higher) else None
        cells = []
        for m in cols:
            e = summary.get(m, {}).get(metric)
            same = e and len(set(e["values"])) == 1  # e.g. a wall-clock shared by all seeds
            c = (_fmt(e["mean"]) if same else _fmt(e["mean"], e["std"])) if e else ""
            cells.append(f"**{c}**" if m == best and c else c)
        sig = best_line(summary, metric, higher) if higher is not None else ""
        out.append(f"| {label} | " + " | ".join(cells) + f" | {sig} |")
    return "\n".join(out)


def older_code_note(results) -> list[str]:
    """Lines naming the runs whose config.json was written by another version of the package (or none)."""
    from ..io import read_json
    old = []
    for r in results:
        v = read_json(r.run_dir / "config.json").get("version") if (r.run_dir / "config.json").exists() else None
        if v != __version__:
            old.append(f"{r.run_dir.name} ({'before versions were recorded' if v is None else 'version ' + v})")
    if not old:
        return []
    return [f"**From older code.** These runs were trained by another version of ae_jax than the one that wrote "
            f"this report ({__version__}): " + ", ".join(old) + ". Rerun with `--force` to redo them.", ""]


def diverged_note(results) -> list[str]:
    """One line on seeds whose training diverged (left out of every number), or that none did."""
    bad = [f"{r.run_dir.name} seed {d['seed']} (epoch {d['epoch']})" for r in results
           for d in r.metrics.get("diverged", [])]
    if not bad:
        return ["- Diverged seeds: none.", ""]
    return [f"- Diverged seeds ({len(bad)}), left out of every mean, std and test: " + ", ".join(bad) + ".", ""]

"""What every study's report shares: mean ± std cells, significance over seeds, tables, provenance."""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from .. import __version__

SIGNIFICANCE = 0.05


def _fmt(v: float | None, std: float | None = None, decimals: int | None = None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    d = decimals if decimals is not None else 4 if abs(v) < 10 else (2 if abs(v) < 1000 else 0)
    s = f"{v:.{d}f}"
    if std is not None and math.isfinite(std):
        s += f" ± {std:.{_std_decimals(std, d)}f}"
    return s


def _std_decimals(std: float, d: int) -> int:
    """The mean's decimals d, or more where a nonzero std would show as zero: two significant digits then."""
    if std == 0 or round(abs(std), d) != 0:
        return d
    return d + 1 - math.floor(math.log10(abs(std) * 10 ** d))


def _finite(v: Sequence[float | None]) -> np.ndarray:
    return np.asarray([x for x in v if x is not None and math.isfinite(x)])


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of a vs b (nan if either has < 2 finite values or no spread)."""
    from scipy import stats
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant sample (shared wall-clock)
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired(a: Sequence[float | None], b: Sequence[float | None]) -> float:
    """Two-sided paired t-test p-value of a vs b, seed by seed (a[i] and b[i] come from the same seed).

    Seeds where either value is missing or not finite are left out. nan with
    fewer than 2 pairs, when either sample has no spread (a wall-clock shared
    by all seeds is one measurement, not several), or when the differences are
    all equal.
    """
    from scipy import stats
    if len(a) != len(b):
        raise ValueError(f"a paired test needs one value per seed on both sides, got {len(a)} and {len(b)}")
    ok = [i for i in range(len(a)) if all(v is not None and math.isfinite(v) for v in (a[i], b[i]))]
    x, y = np.asarray([a[i] for i in ok], float), np.asarray([b[i] for i in ok], float)
    if len(ok) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0 or np.ptp(x - y) == 0:
        return float("nan")
    return float(stats.ttest_rel(x, y).pvalue)


PAIRED_NAME, WELCH_NAME = "paired t-test", "Welch"


def run_pair_key(run) -> tuple | None:
    """What makes the seeds of two runs pairs: the run's seed list and the source revision that trained it.

    A seed fixes the minibatch order and the noise draws of every model alike,
    so seed s of one run and seed s of another, trained by the same source
    revision, are a pair (``compare``). The package version is not enough: it
    stays the same across revisions that move per-seed numbers (beta_vae_strict's
    test BCE moved by up to 0.077 between two revisions of one version). A run
    whose revision is not recorded pairs with nothing (None): Welch's test is
    used for it. Uncommitted code ("<rev>+dirty", which the report names) pairs
    only with runs that recorded the same string.
    """
    rev = recorded_revision(run.run_dir)
    if not rev:
        return None
    return tuple(run.planned.cfg.seed_list), rev


def recorded_revision(run_dir) -> str | None:
    """The source revision a run folder's config.json records (None: not recorded)."""
    return _recorded(run_dir).get("revision") or None


def pairs_note(pairing: dict) -> list[str]:
    """One line naming which columns the report treats as pairs (same seeds and source revision), or none."""
    groups: dict = {}
    for col, key in pairing.items():
        if key is not None:
            groups.setdefault(key, []).append(col)
    made = [cols for cols in groups.values() if len(cols) > 1]
    alone = sorted(col for col, key in pairing.items() if key is None or len(groups.get(key, ())) < 2)
    text = ("- Pairs for the paired t-test (trained on the same seeds by the same source revision): "
            + ("; ".join(", ".join(f"`{c}`" for c in cols) for cols in made) if made else "none"))
    if alone:
        text += "; compared by Welch's test (no other column of the same revision): " + ", ".join(
            f"`{c}`" for c in alone)
    return [text + "."]


def recorded_version(run_dir) -> str | None:
    """The package version a run folder's config.json records (None: before versions were recorded)."""
    return _recorded(run_dir).get("version")


def _recorded(run_dir) -> dict:
    from ..io import read_json
    cfg_path = run_dir / "config.json"
    return read_json(cfg_path, keys=()) if cfg_path.exists() else {}


def p_text(test: str, p: float) -> str:
    """"<test> p = 0.012", or "no test possible"."""
    return f"{test} p = {p:.2g}" if math.isfinite(p) else "no test possible"


def compare(summary: dict, a: str, b: str, metric: str, pairing: dict | None = None) -> tuple[str, float]:
    """(test name, p) of a vs b on metric: paired over seeds when pairing[a] == pairing[b] (both given), else Welch.

    ``pairing`` maps each column to a key that is equal for runs that share
    their seeds' minibatch order and noise draws (e.g. the seed list and the
    code version); columns absent from it, or with a None key, are unpaired.
    """
    va, vb = summary[a][metric]["values"], summary[b][metric]["values"]
    ka, kb = (pairing or {}).get(a), (pairing or {}).get(b)
    if ka is not None and ka == kb and len(va) == len(vb):
        return PAIRED_NAME, paired(va, vb)
    return WELCH_NAME, welch(va, vb)


def ranking(summary: dict, metric: str, higher: bool) -> list[str]:
    have = [m for m in summary if metric in summary[m] and summary[m][metric]["mean"] is not None
            and math.isfinite(summary[m][metric]["mean"])]
    return sorted(have, key=lambda m: summary[m][metric]["mean"], reverse=higher)


def significantly_above(mean_a: float, mean_b: float, p: float) -> bool | None:
    """Whether a's mean is above b's and the test says so (p < SIGNIFICANCE); None when no test was possible
    (one seed, or no spread across seeds): a check that cannot be made is untested, not failed."""
    return (mean_a > mean_b and p < SIGNIFICANCE) if math.isfinite(p) else None


def best_line(summary: dict, metric: str, higher: bool, pairing: dict | None = None) -> str:
    order = ranking(summary, metric, higher)
    if len(order) < 2:
        return ""
    tied = [m for m in order if summary[m][metric]["mean"] == summary[order[0]][metric]["mean"]]
    if len(tied) > 1:  # e.g. every seed of both finds all 10 digits: no best to test
        return f"{', '.join(tied[:-1])} and {tied[-1]} tie"
    a, b = order[0], order[1]
    test, p = compare(summary, a, b, metric, pairing)
    if not math.isfinite(p):
        return f"{a} ahead of {b} (no test possible)"
    verdict = "significant" if p < SIGNIFICANCE else "not significant"
    return f"{a} vs {b}: {test} p = {p:.2g} ({verdict})"


def task_table(summary: dict, rows: list, models: Sequence[str], pairing: dict | None = None) -> str:
    """A markdown table: a row per (metric, label, higher[, decimals]), a column per model, best against runner-up.

    ``higher`` None: the row is shown but not ranked (no bold, no test); ``decimals`` fixes the cells' format.
    """
    cols = [m for m in models if any(r[0] in summary.get(m, {}) for r in rows)]
    if not cols:
        return ""
    rows = [r for r in rows if any(r[0] in summary.get(m, {}) for m in cols)]  # no row that no column has
    sub = {m: summary[m] for m in cols}  # rank only the table's own columns
    out = ["| metric | " + " | ".join(cols) + " | best vs runner-up |",
           "|---|" + "---|" * (len(cols) + 1)]
    for metric, label, higher, *decimals in rows:
        d = decimals[0] if decimals else None
        order = ranking(sub, metric, higher) if higher is not None else []
        best = {m for m in order if sub[m][metric]["mean"] == sub[order[0]][metric]["mean"]} if order else set()
        cells = []
        for m in cols:
            e = summary.get(m, {}).get(metric)
            same = e and len(set(e["values"])) == 1  # e.g. a wall-clock shared by all seeds
            c = (_fmt(e["mean"], decimals=d) if same else _fmt(e["mean"], e["std"], d)) if e else ""
            cells.append(f"**{c}**" if m in best and c else c)
        sig = best_line(sub, metric, higher, pairing) if higher is not None else ""
        out.append(f"| {label} | " + " | ".join(cells) + f" | {sig} |")
    return "\n".join(out)


def older_code_note(results) -> list[str]:
    """Lines naming the runs trained by another version of the package, or from uncommitted code (or none)."""
    old, dirty = [], []
    for r in results:
        rec = _recorded(r.run_dir)
        v = rec.get("version")
        if v != __version__:
            old.append(f"{r.run_dir.name} ({'before versions were recorded' if v is None else 'version ' + v})")
        rev = rec.get("revision") or ""
        if rev.endswith("+dirty"):
            dirty.append(f"{r.run_dir.name} (revision {rev})")
    lines = []
    if old:
        lines += [f"**From older code.** These runs were trained by another version of ae_jax than the one that "
                  f"wrote this report ({__version__}): " + ", ".join(old) + ". Rerun with `--force` to redo them.", ""]
    if dirty:
        lines += ["**From uncommitted code.** These runs were trained while ae_jax's source had changes not yet "
                  "committed, so no commit reproduces them exactly: " + ", ".join(dirty) + ". Rerun with `--force` "
                  "to redo them.", ""]
    return lines


def revisions_note(results) -> list[str]:
    """One line naming the source revision each run was trained by (config.json), grouped by revision."""
    by: dict[str, list[str]] = {}
    for r in results:
        rev = _recorded(r.run_dir).get("revision") or "not recorded"
        by.setdefault(rev, []).append(r.run_dir.name)
    if not by:
        return []
    def short(rev: str) -> str:
        return rev if rev == "not recorded" else rev[:7] + ("+dirty" if rev.endswith("+dirty") else "")

    return ["- Trained by source revision (each run's `config.json`): "
            + "; ".join(f"`{short(rev)}` {', '.join(names)}" for rev, names in by.items()) + "."]


def compile_cache_note(results) -> list[str]:
    """Lines naming the runs whose compile time may be a load from the persistent compilation cache (or none)."""
    cached = [r.run_dir.name for r in results if r.metrics["timing"].get("compilation_cache")]
    if not cached:
        return []
    return ["**Compile times may be loads.** These runs trained with the persistent compilation cache on, so "
            "their compile time is a load wherever the same program had been compiled before: "
            + ", ".join(cached) + ". `AE_JAX_COMPILATION_CACHE=off` with `--force` times fresh compiles.", ""]


def diverged_note(results) -> list[str]:
    """One line on seeds whose training diverged (left out of every number), or that none did."""
    bad = [f"{r.run_dir.name} seed {d['seed']} (epoch {d['epoch']})" for r in results
           for d in r.metrics.get("diverged", [])]
    if not bad:
        return ["- Diverged seeds: none.", ""]
    return [f"- Diverged seeds ({len(bad)}), left out of every mean, std and test: " + ", ".join(bad) + ".", ""]


def provenance_notes(results, compile_times: bool = True) -> list[str]:
    """What every study report says of where its runs came from: revisions, diverged seeds, runs from older or
    uncommitted code, and (for a report that shows compile times) which of them may be cache loads."""
    return (revisions_note(results) + diverged_note(results) + older_code_note(results)
            + (compile_cache_note(results) if compile_times else []))


# --------------------------------------------------------------------------- verdicts
# One vocabulary for every claim of every report (docs/studies.md):
#   confirmed          every part's rule met, each comparison significant;
#   refuted            a significant effect in the opposite direction, or a measured effect that contradicts the claim;
#   not shown          the test is not significant, or the measure cannot decide (e.g. both models share the property);
#   not testable here  the architecture or data cannot answer it (the part says why).
# A test that is not significant never refutes.
CONFIRMED, REFUTED, NOT_SHOWN, NOT_TESTABLE = "confirmed", "refuted", "not shown", "not testable here"
VERDICTS = (CONFIRMED, REFUTED, NOT_SHOWN, NOT_TESTABLE)


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a claim: what it says (label), its verdict, and why (the measure and what it showed)."""
    label: str
    verdict: str
    why: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"a verdict is one of {', '.join(VERDICTS)}, got {self.verdict!r}")


def directional(label: str, mean_a: float | None, mean_b: float | None, p: float, test: str = "") -> Part:
    """The part "a is above b" judged by a test's p: confirmed when a > b with p < SIGNIFICANCE, refuted when
    a < b with p < SIGNIFICANCE, otherwise not shown (p ≥ SIGNIFICANCE, no test possible, or a side missing).

    For "a is below b" pass the means negated, or swap a and b.
    """
    if mean_a is None or mean_b is None or not (math.isfinite(mean_a) and math.isfinite(mean_b)):
        return Part(label, NOT_SHOWN, "not run")
    name = f"{test} " if test else ""
    if not math.isfinite(p):
        return Part(label, NOT_SHOWN, "no test possible (one seed, or no spread across seeds)")
    if p >= SIGNIFICANCE:
        return Part(label, NOT_SHOWN, f"{name}p = {p:.2g} ≥ {SIGNIFICANCE}")
    if mean_a > mean_b:
        return Part(label, CONFIRMED, f"{name}p = {p:.2g}")
    if mean_a < mean_b:
        return Part(label, REFUTED, f"the opposite, {name}p = {p:.2g}")
    return Part(label, NOT_SHOWN, "equal means")


def contrast(label: str, has_a: bool | None, has_b: bool | None, a: str = "the first model",
             b: str = "the second model") -> Part:
    """The part "a has the property and b lacks it" from one measure applied to both: confirmed when a has it and
    b not; refuted when a lacks it (a measured effect against the claim); not shown when both have it (the
    measure does not tell the two apart) or a side could not be measured."""
    if has_a is None:
        return Part(label, NOT_SHOWN, f"not measured for {a}")
    if not has_a:
        return Part(label, REFUTED, f"{a} lacks it")
    if has_b is None:
        return Part(label, NOT_SHOWN, f"{a} has it; not measured for {b}")
    if has_b:
        return Part(label, NOT_SHOWN, f"{a} and {b} both have it: the measure does not tell them apart")
    return Part(label, CONFIRMED, f"{a} has it, {b} does not")


def threshold(label: str, value: float | None, meets: bool | None, fails: bool | None, why: str = "") -> Part:
    """A part judged by a measured value against a bound: confirmed when ``meets``, refuted when ``fails`` (the
    measured value contradicts the claim), not shown in between or when nothing was measured (value None)."""
    if value is None or meets is None:
        return Part(label, NOT_SHOWN, why or "not measured")
    if meets:
        return Part(label, CONFIRMED, why)
    return Part(label, REFUTED if fails else NOT_SHOWN, why)


def overall(parts: Sequence[Part]) -> str:
    """A claim's verdict from its parts: refuted when any part is refuted (a claim is all its parts); confirmed
    when every part is; not testable here when no part can be tested here; otherwise not shown."""
    v = [p.verdict for p in parts]
    if not v:
        return NOT_TESTABLE
    if REFUTED in v:
        return REFUTED
    if all(x == CONFIRMED for x in v):
        return CONFIRMED
    if all(x == NOT_TESTABLE for x in v):
        return NOT_TESTABLE
    return NOT_SHOWN


def verdict_cell(parts: Sequence[Part]) -> str:
    """A report's verdict cell: the overall verdict in bold, then each part's verdict and why (a claim of one part:
    its why)."""
    head = f"**{overall(parts)}**"
    if len(parts) == 1:
        return head + (f" ({parts[0].why})" if parts[0].why else "")
    body = "; ".join(f"{p.label}: {p.verdict}" + (f" ({p.why})" if p.why else "") for p in parts)
    return f"{head} ({body})"


def binomial_below(k: int, n: int, rate: float) -> float:
    """One-sided exact binomial p-value that the true rate is below ``rate``, having seen k successes of n."""
    from scipy import stats
    return float(stats.binomtest(k, n, rate, alternative="less").pvalue) if n else float("nan")

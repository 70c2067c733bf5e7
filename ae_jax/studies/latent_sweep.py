"""Reconstruction error against the latent size n, overall and per digit (docs/studies.md, part A, claims 1-3).

Plan: each model of ``--models`` (default ``vanilla`` and ``vae``) at each
latent size of ``--latent-dims`` (default 2, 5, 10, 20, 50, 100), trained
with ``--loss`` (default MSE, as the study), once with the protocol's hidden
widths for n and once with the n = 20 widths held at every n
(``ExperimentConfig(widths="fixed")``): under the protocol's shrink formula
the hidden layers grow with n, so a plain sweep varies width along with the
latent size. Every run goes through the ``reconstruction`` task (per-digit
errors and the reconstructions of the first test image of each digit, saved
in the run's ``reconstructions.npz``).

Where the runs live (a design decision): each (model, n, widths) is an
ordinary run folder at ``<results root>/<run name>`` (``vanilla_n5_mse``,
``vae_n50_mse_w20``), where every study puts its runs, so the runs other
studies need are shared rather than trained twice: the n = 20 and n = 2 MSE
runs of the AE vs VAE study are this sweep's n = 20 and n = 2. At n = 20 the
fixed widths are the protocol's, so both width settings use one run. The
sweep is trained size by size; a finished run is complete on disk, so an
interruption loses at most the run in progress, and a rerun skips what is done.
Only the sweep's own outputs go to ``<results root>/latent_sweep/``.

Summary: ``{"<key>": {"<n>": {metric: {mean, std, values}}}}``; the key is
the model name under the protocol's widths and ``<model>_w20`` under the
n = 20 widths. Metrics: metrics.json's (test BCE and MSE overall and per
digit, final training and validation loss), the reconstruction task's, and
the timing (``train_time_s``, ``compile_time_s``: seconds spent compiling
the epoch program, shared by all seeds of the run).

Each latent size is its own compiled program: the layers next to the code
(encoder output n or 2n, decoder input n) change shape with n, with the
protocol's widths or the fixed ones alike, so no two sizes can share one. The
report says what compiling cost per size.

The report (``latent_sweep/README.md``) draws every figure from the arrays in
``summary.json`` and the runs' ``reconstructions.npz``, and saves each
figure's arrays beside it (``*.npz``), so it can be redrawn on a clone where
the checkpoints are gone.
"""
from __future__ import annotations

import dataclasses
import math
import platform
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from .. import figures
from ..io import atomic_write_text, fmt_mean_std, read_json, write_npz
from ..models import NUM_CLASSES, get_model, label as model_label
from ..trainer import ExperimentConfig
from ..trainer.config import FIXED_WIDTH_LATENT
from ..trainer.results import device_text
from .driver import PlannedRun, RunResult, Study, StudyOptions
from .report import (CONFIRMED, NOT_SHOWN, NOT_TESTABLE, REFUTED, SIGNIFICANCE, Part, _fmt, overall,
                     provenance_notes, verdict_cell, welch)

MODELS = ("vanilla", "vae")
LATENT_DIMS = (2, 5, 10, 20, 50, 100)
LOSS = "mse"
WIDTHS = ("protocol", "fixed")
TASKS = ("reconstruction",)
STUDY_N = 20         # the n the study chose for its VAE from validation error
MEANINGFUL = 0.05    # claim 2: a change of the mean test MSE by more than 5 % (and Welch-significant) is meaningful
WIDTH_TEXT = {"protocol": "the protocol's widths for each n",
              "fixed": f"the n = {FIXED_WIDTH_LATENT} widths at every n"}


def sweep_key(model: str, widths: str) -> str:
    """The summary key of a model under a width setting: "vae", or "vae_w20" with the n = 20 widths."""
    return model if widths == "protocol" else f"{model}_w{FIXED_WIDTH_LATENT}"


def key_widths(key: str) -> str:
    return "fixed" if key.endswith(f"_w{FIXED_WIDTH_LATENT}") else "protocol"


def key_model(key: str) -> str:
    return key[: -len(f"_w{FIXED_WIDTH_LATENT}")] if key_widths(key) == "fixed" else key


def label(key: str) -> str:
    m = key_model(key)
    return model_label(m) + (f", n = {FIXED_WIDTH_LATENT} widths" if key_widths(key) == "fixed" else "")


@dataclasses.dataclass(frozen=True)
class SweepRun(PlannedRun):
    """A planned run and the (summary key, n) cells it fills: two at n = 20, where both width settings meet."""
    slots: tuple[tuple[str, int], ...] = ()


def settings(opts: StudyOptions) -> tuple[list[str], list[int], str, list[str]]:
    """(models, latent sizes ascending, loss, width settings): the options, or the study's own."""
    models = list(dict.fromkeys(opts.models)) if opts.models else list(MODELS)
    dims = sorted(set(opts.latent_dims)) if opts.latent_dims else list(LATENT_DIMS)
    widths = list(dict.fromkeys(opts.widths)) if opts.widths else list(WIDTHS)
    return models, dims, opts.loss or LOSS, widths


def sweep_config(model: str, n: int, widths: str, loss: str, opts: StudyOptions) -> ExperimentConfig:
    """The run of one cell. A model without hidden layers (shallow) has no widths to hold: its protocol run."""
    if get_model(model).shallow:
        widths = "protocol"
    return ExperimentConfig(model=model, dataset=opts.dataset, latent_dim=n, loss=loss, seeds=opts.seeds,
                            epochs=opts.epochs, widths=widths)


class LatentSweep(Study):
    name = "latent_sweep"
    folder = "latent_sweep"

    def plan(self, opts: StudyOptions) -> list[PlannedRun]:
        """Size by size (every model and width setting at the smallest n first); one run per distinct folder."""
        models, dims, loss, widths = settings(opts)
        cells: dict[str, tuple[ExperimentConfig, list]] = {}
        for n in dims:
            for m in models:
                for w in widths:
                    cfg = sweep_config(m, n, w, loss, opts)
                    cells.setdefault(cfg.name(), (cfg, []))[1].append((sweep_key(m, w), n))
        return [SweepRun(cfg, TASKS, tuple(slots)) for cfg, slots in cells.values()]

    def summarize(self, results: list[RunResult], baselines: dict[str, dict]) -> dict:
        cells = {}
        for r in results:
            for key, n in r.planned.slots:
                cells[(key, n)] = r.entry()
        keys = list(dict.fromkeys(sorted((k for k, _ in cells), key=lambda k: (key_widths(k) != "protocol",))))
        return {k: {str(n): cells[(k, n)] for n in sorted(n for kk, n in cells if kk == k)} for k in keys}

    def report(self, out_dir: Path, summary: dict, results: list[RunResult], opts: StudyOptions,
               session_s: float) -> None:
        runs = {(key, n): r for r in results for key, n in r.planned.slots}
        write_report(out_dir, summary, runs, results, opts, session_s)

    def headline(self, summary: dict) -> str:
        rows = [("model", "n", "test MSE", "final val loss", "compile s")]
        for k, by_n in summary.items():
            for n, e in by_n.items():
                rows.append((k, n, fmt_mean_std(e["test_mse"]), fmt_mean_std(e["final_val_loss"]),
                             _fmt((e.get("compile_time_s") or {}).get("mean"))))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


# --------------------------------------------------------------------------- reading the summary
def sizes(summary: dict, key: str) -> list[int]:
    return sorted(int(n) for n in summary.get(key, {}))


def _get(summary: dict, key: str, n: int, metric: str) -> dict | None:
    e = summary.get(key, {}).get(str(n), {}).get(metric)
    return None if e is None or e["mean"] is None or not math.isfinite(e["mean"]) else e


def _ms(summary: dict, key: str, n: int, metric: str) -> str:
    e = _get(summary, key, n, metric)
    return _fmt(e["mean"], e["std"]) if e else "n/a"


def _arr(summary: dict, keys: Sequence[str], dims: Sequence[int], metric: str) -> dict[str, np.ndarray]:
    """{"mean", "std": [K, N], "values": [K, N, S]} of one metric, NaN where a cell or a seed is missing."""
    seeds = max([len(e[metric]["values"]) for by_n in summary.values() for e in by_n.values() if metric in e] + [1])
    mean, std = np.full((len(keys), len(dims)), np.nan), np.full((len(keys), len(dims)), np.nan)
    values = np.full((len(keys), len(dims), seeds), np.nan)
    for i, k in enumerate(keys):
        for j, n in enumerate(dims):
            e = summary.get(k, {}).get(str(n), {}).get(metric)
            if e is None:
                continue
            mean[i, j] = np.nan if e["mean"] is None else e["mean"]
            std[i, j] = np.nan if e["std"] is None else e["std"]
            v = [np.nan if x is None else x for x in e["values"]]
            values[i, j, :len(v)] = v
    return {"mean": mean, "std": std, "values": values}


def digit_ranking(summary: dict, key: str, n: int) -> list[int] | None:
    """Digits from the lowest to the highest mean per-class test MSE of one cell."""
    means = [(_get(summary, key, n, f"test_mse_class{d}") or {}).get("mean") for d in range(NUM_CLASSES)]
    if any(m is None for m in means):
        return None
    return [int(d) for d in np.argsort(means, kind="stable")]


def _change(ea: dict | None, eb: dict | None) -> tuple[str, float, float]:
    """From one cell to another: ("falls" | "rises" | "flat" | "n/a", relative change of the mean, Welch p).

    "falls" and "rises" need Welch p < SIGNIFICANCE; otherwise the change is "flat" (not told apart from noise).
    """
    if not ea or not eb:
        return "n/a", float("nan"), float("nan")
    p = welch(ea["values"], eb["values"])
    rel = (eb["mean"] - ea["mean"]) / abs(ea["mean"]) if ea["mean"] else float("nan")
    if not (math.isfinite(p) and p < SIGNIFICANCE):
        return "flat", rel, p
    return ("falls" if eb["mean"] < ea["mean"] else "rises"), rel, p


def _step(summary: dict, key: str, a: int, b: int, metric: str) -> tuple[str, float, float]:
    """From n = a to n = b of one key (see _change)."""
    return _change(_get(summary, key, a, metric), _get(summary, key, b, metric))


def _p(p: float) -> str:
    return f"Welch p = {p:.2g}" if math.isfinite(p) else "no test possible"


# --------------------------------------------------------------------------- the claims
def _step_part(label: str, kind: str, rel: float, p: float) -> Part:
    """A step claimed to fall: falls (Welch p < 0.05) confirmed, rises refuted, flat not shown."""
    why = f"{rel:+.1%}, {_p(p)}" if math.isfinite(rel) else "not run"
    return Part(label, {"falls": CONFIRMED, "rises": REFUTED}.get(kind, NOT_SHOWN), why)


def claim_falls(summary: dict, key: str) -> tuple[str, str]:
    """Claim 1 for one key: (what the numbers say, verdict cell).

    Parts: (a) the mean test MSE falls at every step of n (each step: Welch p <
    0.05 and lower; a significant rise refutes; a flat step is not shown);
    (b) every digit's error falls from the smallest to the largest n and rises
    significantly at no step (a significant rise of a digit at a step refutes).
    """
    dims = sizes(summary, key)
    if len(dims) < 2:
        return "needs at least two latent sizes", verdict_cell([Part("the whole claim", NOT_TESTABLE,
                                                                     "fewer than two latent sizes")])
    steps = list(zip(dims, dims[1:]))
    by_step = [(a, b, *_step(summary, key, a, b, "test_mse")) for a, b in steps]
    lo, hi = dims[0], dims[-1]
    digit_rises, digit_span_ok = [], []
    for d in range(NUM_CLASSES):
        m = f"test_mse_class{d}"
        if not _get(summary, key, lo, m):
            continue
        for a, b in steps:
            if _step(summary, key, a, b, m)[0] == "rises":
                digit_rises.append(f"{d} ({a} → {b})")
        digit_span_ok.append((d, _step(summary, key, lo, hi, m)[0] == "falls"))
    not_span = [str(d) for d, ok in digit_span_ok if not ok]
    text = (f"test MSE {' → '.join(_ms(summary, key, n, 'test_mse') for n in dims)} at n = "
            f"{', '.join(map(str, dims))}; by step: "
            + "; ".join(f"{a} → {b} {kind} ({rel:+.1%}, {_p(p)})" for a, b, kind, rel, p in by_step)
            + f". Per digit: {len(digit_span_ok) - len(not_span)} of {len(digit_span_ok)} fall significantly from "
              f"n = {lo} to {hi}" + (f" (not: {', '.join(not_span)})" if not_span else "")
            + (f"; significant rises: {', '.join(digit_rises)}" if digit_rises else "; no digit rises significantly "
               "at any step"))
    steps_part = combine_parts("falls at every step", [_step_part(f"{a} → {b}", kind, rel, p)
                                                       for a, b, kind, rel, p in by_step])
    if not digit_span_ok:
        digits = Part("for every digit", NOT_SHOWN, "no per-digit errors")
    elif digit_rises:
        digits = Part("for every digit", REFUTED, "significant rises: " + ", ".join(digit_rises))
    elif not_span:
        digits = Part("for every digit", NOT_SHOWN, f"not significant from n = {lo} to {hi}: {', '.join(not_span)}")
    else:
        digits = Part("for every digit", CONFIRMED, f"all {len(digit_span_ok)} fall from n = {lo} to {hi}")
    return text, verdict_cell([steps_part, digits])


def combine_parts(label: str, parts: list[Part]) -> Part:
    """One part from several: its overall verdict, the parts that are not confirmed named in why."""
    v = overall(parts)
    odd = [f"{p.label}: {p.verdict}" + (f" ({p.why})" if p.why else "") for p in parts if p.verdict != CONFIRMED]
    return Part(label, v, "; ".join(odd) if odd else f"all {len(parts)} confirmed")


def _within(ea: dict | None, eb: dict | None, ref: dict | None) -> tuple[bool | None, tuple[float, float]]:
    """Whether the 95 % confidence interval (Welch) of mean(b) − mean(a) lies within ±MEANINGFUL of ref's mean (a's),
    and that interval relative to ref's mean (an equivalence check: "hardly changes" needs the change to be
    shown small, not merely not significant)."""
    from scipy import stats
    if not ea or not eb or not ref:
        return None, (float("nan"), float("nan"))
    a, b = np.asarray(ea["values"], float), np.asarray(eb["values"], float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None, (float("nan"), float("nan"))
    lo, hi = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    lo, hi = lo / abs(ref["mean"]), hi / abs(ref["mean"])
    return bool(-MEANINGFUL < lo and hi < MEANINGFUL), (float(lo), float(hi))


def claim_flat(summary: dict, key: str, ae_key: str | None) -> tuple[str, str]:
    """Claim 2 for one key: (what the numbers say, verdict cell). The error is the test MSE of the reconstruction
    from a sampled z, as the VAE is trained and evaluated (the mean μ's error was not saved).

    Part (a) "hardly changes from the smallest n to 20" and part (b) "hardly changes beyond 20 (it may rise)":
    a meaningful fall (more than MEANINGFUL, Welch p < 0.05) refutes; confirmed when the change is shown small
    (the Welch 95 % confidence interval of the difference within ±MEANINGFUL of the smaller n's mean) or, beyond 20,
    a significant rise (which the claim allows); not shown otherwise.
    """
    dims = sizes(summary, key)
    if STUDY_N not in dims:
        return f"needs n = {STUDY_N} in the sweep", verdict_cell([Part("the whole claim", NOT_TESTABLE,
                                                                      f"no n = {STUDY_N} in the sweep")])
    above = [n for n in dims if n > STUDY_N]
    below = [n for n in dims if n < STUDY_N]
    def judge(label, a, b, rise_ok):
        kind, rel, p = _step(summary, key, a, b, "test_mse")
        ea = _get(summary, key, a, "test_mse")
        small, (lo, hi) = _within(ea, _get(summary, key, b, "test_mse"), ea)
        why = f"{rel:+.1%}, {_p(p)}; 95 % CI of the change {lo:+.1%} to {hi:+.1%}"
        if kind == "falls" and rel < -MEANINGFUL:
            return Part(label, REFUTED, "falls " + why)
        if small or (rise_ok and kind == "rises"):
            return Part(label, CONFIRMED, why)
        return Part(label, NOT_SHOWN, why)

    def ae_change(a, b):
        rel = _step(summary, ae_key, a, b, "test_mse")[1] if ae_key else float("nan")
        return f"; the AE's: {rel:+.1%}" if math.isfinite(rel) else ""

    parts, texts = [], []
    if below:
        parts.append(judge(f"hardly changes from n = {below[0]} to {STUDY_N}", below[0], STUDY_N, False))
        _, rel, p = _step(summary, key, below[0], STUDY_N, "test_mse")
        texts.append(f"n = {below[0]} → {STUDY_N}: {rel:+.1%} ({_p(p)}{ae_change(below[0], STUDY_N)})")
    if above:
        beyond = [judge(f"n = {n}", STUDY_N, n, True) for n in above]
        parts.append(combine_parts(f"hardly changes beyond n = {STUDY_N} (may rise)", beyond))
        texts.append(f"beyond n = {STUDY_N}: " + "; ".join(
            f"n = {n} vs {STUDY_N}: {_step(summary, key, STUDY_N, n, 'test_mse')[1]:+.1%} "
            f"({_p(_step(summary, key, STUDY_N, n, 'test_mse')[2])}{ae_change(STUDY_N, n)})" for n in above))
    else:
        texts.append(f"no n above {STUDY_N} in the sweep")
    if above and below:
        rel = _step(summary, key, dims[0], dims[-1], "test_mse")[1]
        texts.append(f"n = {dims[0]} → {dims[-1]}: {rel:+.1%}{ae_change(dims[0], dims[-1]).replace(';', ',')}")
    text = ("error: test MSE of the reconstruction from a sampled z, as trained (the error from the mean μ is not "
            "shown: the runs kept no μ reconstructions and no checkpoint); " + "; ".join(texts)
            + f". Meaningful: a fall of more than {MEANINGFUL:.0%} with Welch p < {SIGNIFICANCE}")
    if not parts:
        return text, verdict_cell([Part("the whole claim", NOT_TESTABLE, "no other n in the sweep")])
    return text, verdict_cell(parts)


def claim_digits(summary: dict, keys: Sequence[str]) -> tuple[str, str]:
    """Claim 3 over the given keys at every n: {1, 7} the two lowest per-class errors, {2, 8} the two highest,
    each gap to the nearest other digit significant (``ae_vs_vae.difficulty_part``: a paired t-test over seeds
    within one run; another digit significantly past the pair refutes)."""
    from .ae_vs_vae import difficulty_part
    easy, hard, texts = [], [], []
    for k in keys:
        held = []
        for n in sizes(summary, k):
            r = digit_ranking(summary, k, n)
            if r is None:
                continue
            one = {k: summary[k][str(n)]}
            easy.append(difficulty_part(one, k, "easy", name=f"{label(k)}, n = {n}"))
            hard.append(difficulty_part(one, k, "hard", name=f"{label(k)}, n = {n}"))
            held.append((n, set(r[:2]) == {1, 7}, set(r[-2:]) == {2, 8}, r))
        if held:
            texts.append(f"{label(k)}: easiest two {{1, 7}} at {sum(e for _, e, _, _ in held)} of {len(held)} sizes, "
                         f"hardest two {{2, 8}} at {sum(h for _, _, h, _ in held)} of {len(held)} (n = "
                         + " / ".join(f"{n}: {r[0]}, {r[1]} … {r[-2]}, {r[-1]}" for n, _, _, r in held) + ")")
    if not easy:
        return "not run", verdict_cell([Part("the whole claim", NOT_SHOWN, "runs missing")])
    text = "; ".join(texts) + " (digits by mean per-class test MSE, easiest first)"
    return text, verdict_cell([combine_parts("1 and 7 easiest", easy), combine_parts("2 and 8 hardest", hard)])


def claims(summary: dict, widths: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(#, claim and width setting, what our numbers say, verdict) for claims 1-3 under each width setting."""
    rows = []
    for w in widths:
        wt = f" ({WIDTH_TEXT[w]})"
        ae, vae = sweep_key("vanilla", w), sweep_key("vae", w)
        missing = verdict_cell([Part("the whole claim", NOT_SHOWN, "not in the sweep")])
        t, v = claim_falls(summary, ae) if ae in summary else ("vanilla is not in the sweep", missing)
        rows.append(("1", "plain AE: test error falls as n grows, for every digit" + wt, t, v))
        t, v = (claim_flat(summary, vae, ae if ae in summary else None) if vae in summary
                else ("vae is not in the sweep", missing))
        rows.append(("2", "VAE: test error hardly changes with n, may rise past about 20" + wt, t, v))
        keys = [k for k in summary if key_widths(k) == w]
        t, v = claim_digits(summary, keys)
        rows.append(("3", "1 and 7 are the easiest digits, 2 and 8 the hardest" + wt, t, v))
    return sorted(rows, key=lambda r: r[0])  # stable: each claim's width settings side by side


def chosen_n(summary: dict, key: str) -> tuple[int, str] | None:
    """(n with the lowest mean final validation loss, a sentence comparing it with the study's n = 20)."""
    have = [(n, _get(summary, key, n, "final_val_loss")) for n in sizes(summary, key)]
    have = [(n, e) for n, e in have if e]
    if not have:
        return None
    best, e = min(have, key=lambda t: t[1]["mean"])
    text = f"{label(key)}: the lowest mean validation loss is at n = {best} ({_fmt(e['mean'], e['std'])})"
    ref = _get(summary, key, STUDY_N, "final_val_loss")
    if best == STUDY_N:
        text += f", which agrees with the study's n = {STUDY_N}"
    elif ref:
        p = welch(e["values"], ref["values"])
        sig = math.isfinite(p) and p < SIGNIFICANCE
        text += (f"; n = {STUDY_N}: {_fmt(ref['mean'], ref['std'])} ({_p(p)}): "
                 + (f"significantly worse, so our validation loss would not pick the study's n = {STUDY_N}"
                    if sig else f"not told apart (p ≥ {SIGNIFICANCE}): whether n = {STUDY_N} is worse is not shown"))
    else:
        text += f"; n = {STUDY_N} is not in the sweep"
    return best, text


# --------------------------------------------------------------------------- figures
STYLE = {"protocol": "-", "fixed": "--"}


def fig_error(out: Path, summary: dict, keys: list[str], dims: list[int]) -> str | None:
    plt = figures.plt
    metrics = (("test_mse", "test MSE (summed per image)"), ("final_val_loss", "validation loss after the last epoch"))
    data = {m: _arr(summary, keys, dims, m) for m, _ in metrics}
    if not np.isfinite(data["test_mse"]["mean"]).any():
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    colours = {k: plt.get_cmap("tab10")(i) for i, k in enumerate(keys)}  # each series its own colour (and style)
    vae_keys = [k for k in keys if key_model(k) != "vanilla"]
    for ax, (m, title) in zip(axes, metrics):
        for i, k in enumerate(keys):
            if m == "final_val_loss" and k not in vae_keys:
                continue  # the AE's objective is its reconstruction alone: not like with the VAE's
            mean, std = data[m]["mean"][i], data[m]["std"][i]
            ok = np.isfinite(mean)
            x = np.asarray(dims, float)[ok]
            c = colours[k]
            ax.plot(x, mean[ok], STYLE[key_widths(k)], marker="o", ms=3, color=c, label=label(k))
            s = np.nan_to_num(std[ok])
            ax.fill_between(x, mean[ok] - s, mean[ok] + s, color=c, alpha=0.18, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(dims)
        ax.set_xticklabels([str(n) for n in dims])
        ax.minorticks_off()
        ax.set_xlabel("latent size n")
        ax.set_ylabel(title)
        ax.set_title(title + ", mean ± std over seeds", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].set_title("VAE only: validation loss after the last epoch = reconstruction + KL\n(its training "
                      "objective; the AE's is reconstruction alone, not drawn here), mean ± std", fontsize=9)
    axes[0].set_title("test MSE (summed per image; the VAE's from a sampled z),\nmean ± std over seeds",
                      fontsize=9)
    axes[0].legend(fontsize=8)
    if vae_keys:
        axes[1].legend(fontsize=8)
    figures.save(fig, out / "error_vs_latent.png")
    write_npz(out / "error_vs_latent.npz", keys=np.asarray(keys), n=np.asarray(dims),
              **{f"{m}_{part}": data[m][part] for m, _ in metrics for part in ("mean", "std", "values")})
    return "error_vs_latent.png"


def fig_per_class(out: Path, summary: dict, keys: list[str], dims: list[int]) -> str | None:
    plt = figures.plt
    mse = np.stack([np.stack([_arr(summary, [k], dims, f"test_mse_class{d}")["mean"][0] for d in range(NUM_CLASSES)])
                    for k in keys])                                                        # [K, 10, N]
    if not np.isfinite(mse).any():
        return None
    cols = min(len(keys), 2)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.6, 0.8 * len(dims) + 2.6) * cols, 4.8 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_axis_off()
    fig.subplots_adjust(wspace=0.3, hspace=0.3, right=0.86)
    lo, hi = (float(np.nanmin(mse)), float(np.nanmax(mse))) if np.isfinite(mse).any() else (0.0, 1.0)
    norm = figures.plt.matplotlib.colors.LogNorm(vmin=max(lo, 1e-6), vmax=max(hi, lo * 1.0001, 1e-6))
    for i, (ax, k, m) in enumerate(zip(axes.flat, keys, mse)):
        im = ax.imshow(m, cmap="viridis", aspect="auto", norm=norm)  # one colour scale for every panel
        ax.set_xticks(range(len(dims)), [str(n) for n in dims])
        ax.set_yticks(range(NUM_CLASSES), [str(d) for d in range(NUM_CLASSES)])
        ax.set_xlabel("latent size n")
        if i % cols == 0:
            ax.set_ylabel("digit")
        ax.set_title(label(k), fontsize=9)
        for d in range(NUM_CLASSES):
            for j in range(len(dims)):
                if np.isfinite(m[d, j]):
                    bright = norm(m[d, j]) > 0.6  # viridis is light at the top
                    ax.text(j, d, f"{m[d, j]:.1f}", ha="center", va="center", fontsize=7.5,
                            color="black" if bright else "white")
    cax = fig.add_axes([0.89, 0.15, 0.02, 0.7])
    ticker = figures.plt.matplotlib.ticker
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("mean test MSE (one log scale for every panel)", fontsize=9)
    cb.ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))  # 1, 2, 5 per decade: a log bar readable
    cb.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    cb.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    fig.suptitle("mean test MSE per digit (summed per image), digits × latent size", fontsize=10, y=0.95)
    figures.save(fig, out / "per_class.png")
    write_npz(out / "per_class.npz", keys=np.asarray(keys), n=np.asarray(dims), digits=np.arange(NUM_CLASSES),
              mse=mse)
    return "per_class.png"


def fig_reconstructions(out: Path, runs: dict, keys: list[str], dims: list[int]) -> str | None:
    """10 fixed test images (the first of each digit) and, per model, their reconstruction at every n."""
    plt = figures.plt
    loaded = {}
    for (k, n), r in runs.items():
        p = r.run_dir / "reconstructions.npz"
        if p.exists():
            loaded[(k, n)] = np.load(p)
    if not loaded:
        return None
    first = next(iter(loaded.values()))
    x, index = first["digit_x"], first["digit_index"]
    recon = np.full((len(keys), len(dims)) + x.shape, np.nan, np.float32)
    seeds = np.full((len(keys), len(dims)), -1)
    for i, k in enumerate(keys):
        for j, n in enumerate(dims):
            d = loaded.get((k, n))
            if d is not None and np.array_equal(d["digit_index"], index):
                recon[i, j], seeds[i, j] = d["digit_recon"], int(d["seed"])
    write_npz(out / "reconstructions.npz", x=x, index=index, recon=recon, keys=np.asarray(keys), n=np.asarray(dims),
              seeds=seeds)
    cols = min(len(keys), 2)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 0.55 * (len(dims) + 1) * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_axis_off()
    for ax, k, rec, sd in zip(axes.flat, keys, recon, seeds):
        grid = np.concatenate([x[None], np.nan_to_num(rec, nan=1.0)])                      # [1 + N, 10, 32, 32]
        ax.imshow(figures.tile(grid, pad=1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([34 * i + 17 for i in range(len(dims) + 1)], ["test"] + [f"n = {n}" for n in dims], fontsize=7)
        ax.set_xticks([])
        shown = sorted({int(s) for s in sd if s >= 0})
        ax.set_title(f"{label(k)} (seed {', '.join(map(str, shown)) or 'n/a'})", fontsize=9)
        for s in ax.spines.values():
            s.set_visible(False)
    fig.suptitle("the first test image of each digit, and its reconstruction at every latent size", fontsize=9)
    figures.save(fig, out / "reconstructions.png")
    return "reconstructions.png"


# --------------------------------------------------------------------------- the report
TABLE_ROWS = [("test_mse", "test MSE"), ("test_bce", "test BCE"), ("final_val_loss", "final val loss"),
              ("train_time_s", "train s"), ("compile_time_s", "compile s")]
TIME_DIGITS = {"train_time_s": 0, "compile_time_s": 1}


def model_table(summary: dict, key: str, runs: dict) -> str:
    out = ["| n | " + " | ".join(lab for _, lab in TABLE_ROWS) + " | run folder |",
           "|---|" + "---|" * (len(TABLE_ROWS) + 1)]
    for n in sizes(summary, key):
        cells = []
        for m, _ in TABLE_ROWS:
            e = _get(summary, key, n, m)
            same = e and len(set(e["values"])) == 1  # a wall-clock shared by all seeds
            if not e:
                cells.append("n/a")
            elif m in TIME_DIGITS:  # a wall-clock: whole seconds for training, tenths for compiling
                cells.append(f"{e['mean']:.{TIME_DIGITS[m]}f}" + ("" if same else f" ± {e['std']:.{TIME_DIGITS[m]}f}"))
            else:
                cells.append(_fmt(e["mean"]) if same else _fmt(e["mean"], e["std"]))
        r = runs.get((key, n))
        out.append(f"| {n} | " + " | ".join(cells) + f" | `{r.run_dir.name if r else ''}` |")
    return "\n".join(out)


def per_class_table(summary: dict, key: str) -> str:
    out = ["| n | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " | easiest → hardest |",
           "|---|" + "---|" * (NUM_CLASSES + 1)]
    for n in sizes(summary, key):
        r = digit_ranking(summary, key, n)
        out.append(f"| {n} | " + " | ".join(_ms(summary, key, n, f"test_mse_class{d}") for d in range(NUM_CLASSES))
                   + f" | {' '.join(map(str, r)) if r else ''} |")
    return "\n".join(out)


def _param_shapes(model: str, n: int, widths: str) -> dict:
    """The shapes of a model's parameters at n under a width setting (nothing is computed)."""
    cfg = sweep_config(model, n, widths, LOSS, StudyOptions()).train_config()
    from ..trainer.program import make_model
    spec = get_model(model)
    module = make_model(spec, cfg)
    x = jax.numpy.zeros((2, 32, 32))
    cond = jax.numpy.zeros((2,), jax.numpy.int32) if spec.conditional else None
    return jax.eval_shape(lambda k: module.init(k, x, cond), jax.random.key(0))["params"]


def param_count(model: str, n: int, widths: str) -> int:
    return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(_param_shapes(model, n, widths))))


def layer_widths(model: str, n: int, widths: str) -> str:
    """'1024 → 512 → 128 → 40 | 20 → 128 → 512 → 1024': a model's dense layers at n."""
    params = _param_shapes(model, n, widths)

    def chain(part):
        ks = sorted((name, v["kernel"].shape) for name, v in params[part].items() if "kernel" in v) \
            if "kernel" not in params[part] else [(part, params[part]["kernel"].shape)]
        return " → ".join([str(ks[0][1][0])] + [str(s[1]) for _, s in ks])
    return f"{chain('enc')} \\| {chain('dec')}"


def width_table(models: Sequence[str], dims: Sequence[int], widths: Sequence[str]) -> str:
    cols = [(m, w) for w in widths for m in models]
    out = ["| n | " + " | ".join(f"{label(sweep_key(m, w))}" for m, w in cols) + " |", "|---|" + "---|" * len(cols)]
    for n in dims:
        out.append(f"| {n} | " + " | ".join(layer_widths(m, n, w) for m, w in cols) + " |")
    return "\n".join(out)


def _compile_lines(results: list[RunResult]) -> list[str]:
    comp = [(r.run_dir.name, r.metrics["timing"].get("compile_time_s"), r.metrics["timing"].get("train_time_s"))
            for r in results]
    known = [(name, c, t) for name, c, t in comp if c is not None]
    if not known:
        return []
    total_c, total_t = sum(c for _, c, _ in known), sum(t or 0.0 for _, _, t in known)
    lo, hi = min(known, key=lambda t: t[1]), max(known, key=lambda t: t[1])
    return [f"Each latent size is its own compiled program: the layers next to the code (the encoder's last, "
            f"n or 2n wide, and the decoder's first, reading n) change shape with n, under either width setting, so "
            f"no two sizes can share one; every run compiles its epoch program once, for all its seeds together. "
            f"Compiling took {total_c:.1f} s over the {len(known)} runs ({lo[1]:.1f} s for `{lo[0]}` to "
            f"{hi[1]:.1f} s for `{hi[0]}`; per size in the `compile s` column above), beside {total_t:.0f} s of "
            f"training.", ""]


def _shared_runs(results: list[RunResult]) -> list[str]:
    """Run folders trained by another command (another study's), reused here."""
    out = []
    for r in results:
        p = r.run_dir / "config.json"
        cmd = read_json(p, keys=()).get("command", "") if p.exists() else ""
        if cmd and "latent_sweep.py" not in cmd:
            out.append(f"`{r.run_dir.name}` (`{cmd}`)")
    return out


def write_report(out: Path, summary: dict, runs: dict, results: list[RunResult], opts: StudyOptions,
                 session_s: float) -> None:
    models, dims, loss, widths = settings(opts)
    keys = list(summary)
    made = [f for f in (fig_error(out, summary, keys, dims), fig_per_class(out, summary, keys, dims),
                        fig_reconstructions(out, runs, keys, dims)) if f]
    devices = sorted({device_text(r.metrics["device"]) for r in results})
    shared = _shared_runs(results)
    lines = [f"# Reconstruction error against latent size on {opts.dataset}", "",
             "Claims 1-3 of docs/studies.md part A: how the test error of a plain autoencoder and a VAE depends on "
             "the latent size n, overall and per digit. Produced by (rerun it to reproduce; finished runs are "
             "reused, `--force` redoes them):", "",
             f"    {opts.command}", "",
             f"- Models: {', '.join(models)}; latent sizes n = {', '.join(map(str, dims))}; loss: {loss} (summed over "
             f"the 1024 pixels per image, averaged over the batch; β = 1 for the VAE family); seeds: {opts.seeds}; "
             f"epochs: {opts.epochs}; otherwise the protocol (BatchNorm, Adam 1e-3, batch 256). Every number is "
             "mean ± sample std over seeds.",
             f"- Width settings: {'; '.join(f'`{w}`: {WIDTH_TEXT[w]}' for w in widths)}. Under the protocol the "
             f"hidden widths follow n (table below), so a plain sweep changes width along with n; holding the "
             f"n = {FIXED_WIDTH_LATENT} widths separates the two. Summary keys: the model name for the protocol's "
             f"widths, `<model>_w{FIXED_WIDTH_LATENT}` for the fixed ones; at n = {FIXED_WIDTH_LATENT} both are "
             "one run.",
             "- The runs are ordinary run folders beside this one (`../<run name>`), shared with every other study "
             "that needs the same run: a run another study already trained is reused, not trained again."
             + (f" Trained by another command: {', '.join(shared)}." if shared else ""),
             f"- Machine: {platform.machine()} with {jax.device_count()} {jax.devices()[0].platform} device(s); "
             f"training devices recorded: {', '.join(devices) or 'n/a'}. This invocation took {session_s:.0f} s.",
             f"- Welch's (unpaired) t-test over seeds, significant at p < {SIGNIFICANCE}. Runs of different n share "
             "seeds and so the minibatch order, but n changes the shape of every draw next to the code (the "
             "initial weights of those layers, a VAE's noise), so a seed's draws are not the same across sizes and "
             "the seeds are not treated as pairs: the unpaired test is the cautious one here.",
             "- Per-seed values: `summary.json`; each figure's arrays: the `.npz` of the same name."]
    lines += provenance_notes(results)
    lines += ["## Hidden widths", "",
              "Units of the dense layers, encoder | decoder (a conditional model's inputs include its 10 label units).",
              "", width_table(models, dims, widths), ""]
    for k in keys:
        lines += [f"## {label(k)} (`{k}`)", "", model_table(summary, k, runs), ""]
    lines += ["`train s` and `compile s`: wall-clock of the whole run (all seeds train together in one program).", ""]
    lines += ["## Compilation", ""] + _compile_lines(results)
    lines += ["## Test MSE per digit", ""]
    for k in keys:
        lines += [f"### {label(k)}", "", per_class_table(summary, k), ""]
    lines += ["## The claims of docs/studies.md part A (1-3)", "",
              "| # | claim | what our runs say | verdict |", "|---|---|---|---|"]
    rows = claims(summary, widths)
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "Verdicts: confirmed (every part's rule met, each comparison significant), refuted (a significant "
              "effect against the claim), not shown (not significant, or the measure cannot decide), not testable "
              "here; a claim is refuted when any part is. Rules. A step falls or rises when Welch's test tells the "
              f"two sizes apart (p < {SIGNIFICANCE}); otherwise it is flat. Claim 1: (a) the test MSE falls at every "
              "step of n (a significant rise refutes, a flat step is not shown); (b) every digit's error falls from "
              "the smallest to the largest n and rises significantly at no step (a rise refutes). Claim 2, on the "
              "test MSE from a sampled z (as trained; the error from the mean μ is not recorded, see below): (a) "
              f"from the smallest n to {STUDY_N} and (b) beyond {STUDY_N}, a meaningful fall (more than "
              f"{MEANINGFUL:.0%} with Welch p < {SIGNIFICANCE}) refutes; the part is confirmed when the change is "
              f"shown small (the Welch 95 % confidence interval of the difference within ±{MEANINGFUL:.0%} of the "
              f"smaller n's mean) or, beyond {STUDY_N}, when the error rises significantly (which the claim "
              "allows). Claim 3: at each n, {1, 7} the two digits with the lowest mean error and {2, 8} the two "
              "with the highest, each gap to the nearest other digit significant (paired t-test over seeds within "
              "the run); another digit significantly past the pair refutes.", "",
              "**Which error.** Every error in this report is the test MSE of the reconstruction as evaluation "
              "forms it: from a sampled z for the VAE (its noise adds to the error), from the code for the AE. The "
              "VAE's error from its mean μ (`test_mse_mu`, recorded by the reconstruction task since this report "
              "asked for it) is not recorded for runs evaluated before then: their checkpoints are not kept, so it "
              "would need the runs trained again.", ""]
    if len(widths) > 1:
        beyond = _beyond_direction(summary, models, widths)
        lines += ["**The two width settings** " + _agreement(rows, widths) + (" " + beyond if beyond else ""), ""]
        lines += width_section(summary, models, dims)
    picks = [chosen_n(summary, k) for k in keys if key_model(k) == "vae"]
    picks = [p for p in picks if p]
    if picks:
        lines += ["## Which n the VAE's validation error picks", "",
                  "The study chose n = 20 for its VAE from validation error. Ours: the mean validation loss after "
                  "the last epoch (the training objective, reconstruction + KL, on the validation split).", ""]
        lines += [f"- {t}." for _, t in picks] + [""]
    titles = {"error_vs_latent.png": ("Error against latent size",
                                      "Left: test MSE (the VAE's from a sampled z); right: the VAE's validation loss "
                                      "after the last epoch (its training objective, reconstruction + KL; the AE's "
                                      "objective is reconstruction alone, so it is left out there rather than set "
                                      "against a different quantity); mean line and ± std band over seeds; solid: "
                                      "the protocol's "
                                      f"widths, dashed: the n = {FIXED_WIDTH_LATENT} widths."),
              "per_class.png": ("Test MSE per digit", "Mean per-class test MSE, digits × n, one panel per model and "
                                                      "width setting, all on one colour scale."),
              "reconstructions.png": ("Reconstructions at every n", "The first test image of each digit (top row) "
                                      "and its reconstruction at each n (one seed, z as evaluation forms it: sampled "
                                      "for the VAE).")}
    lines += ["## Figures", ""]
    for f in made:
        title, note = titles[f]
        lines += [f"### {title}", "", note, "", f"![{title}]({f})", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))


def _beyond_direction(summary: dict, models: Sequence[str], widths: Sequence[str]) -> str:
    """Claim 2's "may rise past about 20": the direction of the VAE's error from n = 20 to the largest n, per setting."""
    if "vae" not in models:
        return ""
    steps = {}
    for w in widths:
        k = sweep_key("vae", w)
        above = [n for n in sizes(summary, k) if n > STUDY_N]
        if STUDY_N in sizes(summary, k) and above:
            steps[w] = (above[-1], *_step(summary, k, STUDY_N, above[-1], "test_mse"))
    if len(steps) < 2 or len({kind for _, kind, _, _ in steps.values()}) == 1:
        return ""
    return (f"Past n = {STUDY_N} the VAE's error moves differently under the two settings: "
            + "; ".join(f"with {WIDTH_TEXT[w]} it {kind if kind != 'flat' else 'stays flat'} from n = {STUDY_N} to "
                        f"{top} ({rel:+.1%}, {_p(p)})" for w, (top, kind, rel, p) in steps.items())
            + ". The slight rise past 20 that claim 2 allows for is a property of the width setting, not of the VAE "
              "alone.")


def width_section(summary: dict, models: Sequence[str], dims: Sequence[int]) -> list[str]:
    """Test MSE under the protocol's widths against the n = 20 widths at each n, and which of the two was larger."""
    rows, wins, told = [], 0, 0
    for m in models:
        a, b = sweep_key(m, "protocol"), sweep_key(m, "fixed")
        if a not in summary or b not in summary or get_model(m).shallow:
            continue
        for n in dims:
            ea, eb = _get(summary, a, n, "test_mse"), _get(summary, b, n, "test_mse")
            if n == FIXED_WIDTH_LATENT or not (ea and eb):
                continue
            kind, rel, p = _change(ea, eb)
            pa, pb = param_count(m, n, "protocol"), param_count(m, n, "fixed")
            larger = "protocol" if pa > pb else "fixed" if pb > pa else None
            if kind != "flat" and larger:
                told += 1
                wins += (kind == "falls") == (larger == "fixed")
            rows.append(f"| {model_label(m)} | {n} | {_ms(summary, a, n, 'test_mse')} ({pa:,}) | "
                        f"{_ms(summary, b, n, 'test_mse')} ({pb:,}) | {rel:+.1%} | {p:.2g} | "
                        + {"falls": f"n = {FIXED_WIDTH_LATENT} widths", "rises": "protocol's widths",
                           "flat": "neither (not told apart)"}[kind] + " |")
    if not rows:
        return []
    return (["## Width against latent size", "",
             f"Test MSE with the protocol's widths against the n = {FIXED_WIDTH_LATENT} widths held, at each n other "
             f"than {FIXED_WIDTH_LATENT} (where they are one run); parameters in brackets; change: from the protocol's "
             "widths to the held ones; lower: the setting with the significantly lower error (Welch p < "
             f"{SIGNIFICANCE}).", "",
             "| model | n | protocol's widths | n = 20 widths | change | Welch p | lower |", "|---|---|---|---|---|---|---|"]
            + rows + ["", (f"Where the two settings are told apart, the one with more parameters has the lower "
                           f"error at {wins} of {told} sizes" if told else "The two settings are not told apart at "
                           "any size") + f": below n = {FIXED_WIDTH_LATENT} the protocol shrinks the layers and the "
                          f"held n = {FIXED_WIDTH_LATENT} widths are the larger, above it the protocol's grow past "
                          "them.", ""])


def _agreement(rows, widths) -> str:
    by = {}
    for num, claim, _, verdict in rows:
        w = next(w for w in widths if WIDTH_TEXT[w] in claim)
        by.setdefault(num, {})[w] = verdict.split(" (")[0]  # the overall verdict, not its parts
    same = [n for n, v in by.items() if len(set(v.values())) == 1]
    diff = [n for n, v in by.items() if len(set(v.values())) > 1]
    text = []
    if same:
        text.append(f"agree on claim{'s' if len(same) > 1 else ''} {', '.join(same)}")
    if diff:
        text.append("differ on " + "; ".join(f"claim {n} ({', '.join(f'{w}: {v}' for w, v in by[n].items())})"
                                            for n in diff))
    return " and ".join(text) + "."

"""Train (or reuse) the explorer's models and write its folder.

    results/<dataset>/explorer/
      index.html       the page (open it in a browser: nothing to install, nothing fetched)
      reference.json   JAX's decodes and codes for a few vectors and inputs, per model and seed
      screenshot.png   the page as it opens (when a headless Chromium is found); screenshot_phone.png: on a phone
      pca.png, pca.npz the first seed's training codes, first two principal components, per model
      ranges.json      per-dimension ranges and percentiles of the training codes, per model and seed
      README.md        the command, how to open the page, our ranges beside the original article's
      runs/<name>/     the training runs (run_experiment folders)

``trained_states`` is the only function here that touches the training and
experiment API; everything else works from its ``TrainedModel``s.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..io import atomic_write_text, write_json
from ..models import label as model_label
from .analysis import claims, claims_markdown, code_summary, pca_figure, range_table, ranges_markdown
from .export import ExportedModel, explorable_reason, export_state, jax_apply, np_encode, seed_slice
from .glyphs import glyphs
from .page import (ORIGINAL_RANGES, WEIGHT_FORMAT, PageInput, PageModel, format_text, hidden_widths,
                   page_data, write_page)
from .screenshot import screenshot

DEFAULT_MODELS = ("vanilla", "vae")
DEFAULT_LATENT = 4
INITIAL_DIGITS = (0, 3, 7)  # test digits selected when the page opens, with the question mark


@dataclasses.dataclass
class TrainedModel:
    """A trained model as the explorer needs it; ``state`` has .params and .batch_stats, leaves [S, ...]."""
    name: str
    description: str
    gaussian: bool       # encoder outputs [mu, log_sigma]
    latent_dim: int
    seeds: list[int]
    state: Any
    epochs: int | None = None
    run_dir: Path | None = None


EXPLORABLE_HINT = "vanilla, stacked, denoising, vae, beta_vae_strict, beta_vae_loose or beta_vae"


def check_models(names: Sequence[str]) -> None:
    """Raise ConfigError for an unknown model or one the explorer cannot show."""
    from ..models import MODELS
    from ..trainer import ConfigError
    if not names:
        raise ConfigError(f"name at least one model, e.g. vanilla,vae; the explorer shows {EXPLORABLE_HINT}")
    for name in names:
        if name not in MODELS:
            raise ConfigError(f"unknown model {name!r}; the explorer shows {EXPLORABLE_HINT}")
        why = explorable_reason(MODELS[name])
        if why:
            raise ConfigError(f"the explorer cannot show {why}; use {EXPLORABLE_HINT}")


def trained_states(models: Sequence[str], dataset: str, latent_dim: int, seeds: int, epochs: int,
                   runs_root: Path, data_dir: str | None = None, splits=None, force: bool = False,
                   command: str | None = None, log: Callable[[str], None] = print) -> dict[str, TrainedModel]:
    """Train (or resume, or reuse) each model for seeds 0..seeds-1 into runs_root/<run name>.

    The one coupling to the training and experiment API. Every request is
    checked before anything trains; raises ConfigError (unknown or unsupported
    model, impossible sizes) or DataError.
    """
    from ..trainer import ExperimentConfig, get_model_or_error, load_final_state, run_experiment

    check_models(models)
    cfgs = []
    for name in models:
        spec = get_model_or_error(name)
        cfg = ExperimentConfig(model=name, dataset=dataset, latent_dim=latent_dim, seeds=seeds, epochs=epochs)
        cfg.validate()
        cfgs.append((spec, cfg))
    out = {}
    for spec, cfg in cfgs:
        run_dir = Path(runs_root) / cfg.name()
        _, run_dir = run_experiment(cfg, out=run_dir, data_dir=data_dir, force=force, command=command, log=log,
                                    splits=splits)
        tcfg = cfg.train_config()
        state = load_final_state(spec, tcfg, len(cfg.runs()), run_dir / "checkpoints")
        if state is None:  # finished, but its checkpoints are gone (they are not committed): train again
            log(f"{run_dir} has no final checkpoint; training it again")
            run_experiment(cfg, out=run_dir, data_dir=data_dir, command=command, log=log, splits=splits,
                           reuse_complete=False)
            state = load_final_state(spec, tcfg, len(cfg.runs()), run_dir / "checkpoints")
        out[cfg.model] = TrainedModel(cfg.model, spec.description, spec.bottleneck.name == "gaussian", cfg.latent, cfg.seed_list, state,
                                      cfg.epochs, run_dir)
    return out


# ----------------------------------------------------------------------------- inputs and reference
def page_inputs(x_test: np.ndarray, y_test: np.ndarray) -> list[PageInput]:
    """The first test image of each digit class present, then the three glyphs."""
    out = []
    for k in range(10):
        hits = np.nonzero(np.asarray(y_test) == k)[0]
        if hits.size:
            out.append(PageInput(f"test digit {k}", str(k), np.asarray(x_test[hits[0]], np.float32)))
    shorts = {"question mark": "?", "letter A": "A", "stick figure": "figure"}
    out += [PageInput(name, shorts.get(name, name), img) for name, img in glyphs().items()]
    return out


def _r(a: np.ndarray) -> list:
    """float32 values with 8 significant digits (enough for a 1e-6 comparison, half the JSON)."""
    return np.vectorize(lambda v: float(f"{v:.8g}"), otypes=[float])(np.asarray(a, np.float64)).tolist()


def reference_data(trained: dict[str, TrainedModel], inputs: Sequence[PageInput], n_random: int = 2,
                   seed: int = 0) -> dict:
    """JAX's answers, evaluation mode: {model: {seed: {"z", "images", "inputs", "codes", "names"}}}.

    z [k, n]: the zero vector, ``n_random`` draws from N(0, 1) (numpy seed
    ``seed``) and the code of the first input; images [k, 1024]: the decoder's
    sigmoid output for each; inputs [m, 1024] in [0, 1] and codes [m, n]: what
    the encoder gives for them (the VAE family: mu); names: the inputs' names.
    """
    x = np.stack([np.asarray(i.image, np.float32).reshape(32, 32) for i in inputs])
    ref = {}
    for name, tm in trained.items():
        ref[name] = {}
        rng = np.random.default_rng(seed)
        for i, s in enumerate(tm.seeds):
            enc, dec = jax_apply(seed_slice(tm.state.params, i), seed_slice(tm.state.batch_stats, i),
                                 tm.latent_dim, tm.gaussian)
            codes = enc(x)
            z = np.concatenate([np.zeros((1, tm.latent_dim)), rng.standard_normal((n_random, tm.latent_dim)),
                                codes[:1]]).astype(np.float32)
            ref[name][str(s)] = {"z": _r(z), "images": _r(dec(z)), "inputs": _r(x.reshape(len(x), -1)),
                                 "codes": _r(codes), "names": [i.name for i in inputs]}
    return ref


# ----------------------------------------------------------------------------- the folder
def page_notes(rows: list[dict], n_seeds: int) -> dict:
    """The page's explanatory text that rests on its numbers: the claims (``analysis.claims``) and notes."""
    verdicts = {r["verdict"] for r in rows}
    return {
        "claims": rows,
        "claims_intro": (f"The article's claims, each checked over all {n_seeds} seeds (mean ± std over seeds, "
                         "paired t-test), so the verdicts do not change with the seed switch. Confirmed: the measure "
                         "is significantly larger for the AE (p < 0.05); refuted: significantly smaller; not shown: "
                         "the test is not significant; not testable here: these models cannot answer it."),
        "ranges_note": ("The raw code values of the two models are in unrelated units (the AE's are arbitrary here: "
                        "see below), so the first three rows cannot be compared across models. The last row can: it "
                        "counts in each model's own training spread, which no rescaling of the code changes."),
        "bits_note": ("The original article argues that the VAE's KL term makes most float values unlikely codes, so "
                      "the VAE uses fewer of these bits than the AE, and points to the two models' ranges. The ranges "
                      "cannot show that here: " + ("the claims about them are not testable here (above)."
                                                   if "not testable here" in verdicts else "see the claims above.")),
    }


def _fmt_range(r) -> str:
    return f"[{r[0]:.2f}, {r[1]:.2f}]"


def build_explorer(trained: dict[str, TrainedModel], splits, out_dir: Path, command: str = "",
                   dataset: str | None = None, take_screenshot: bool = True,
                   log: Callable[[str], None] = print, weight_format: str = WEIGHT_FORMAT) -> dict:
    """Write the explorer folder from trained models and the data splits; returns what was written.

    ``splits`` needs x_train [N, 32, 32], y_train, x_test, y_test. All models
    must share the latent size and the seeds.
    """
    out_dir = Path(out_dir)
    dataset = dataset or getattr(splits, "dataset", "?")
    names = list(trained)
    first = trained[names[0]]
    n, seeds = first.latent_dim, first.seeds
    for tm in trained.values():
        if tm.latent_dim != n or tm.seeds != seeds:
            raise ValueError(f"{tm.name}: n = {tm.latent_dim}, seeds {tm.seeds}; expected n = {n}, seeds {seeds}")
    exports: dict[str, list[ExportedModel]] = {name: export_state(name, tm.state, n, tm.gaussian)
                                               for name, tm in trained.items()}
    inputs = page_inputs(splits.x_test, splits.y_test)
    x_inputs = np.stack([i.image for i in inputs])
    log(f"encoding the {len(splits.x_train)} training images for {len(names)} model(s) x {len(seeds)} seed(s)")
    codes = {name: np.stack([np_encode(e, splits.x_train) for e in ex]) for name, ex in exports.items()}
    shown = {name: np.stack([np_encode(e, x_inputs) for e in ex]) for name, ex in exports.items()}
    labels = {name: model_label(name) for name in names}

    epochs = {tm.epochs for tm in trained.values()}
    trained_for = f" for {epochs.pop()} epochs" if len(epochs) == 1 and None not in epochs else ""
    subtitle = (f"{' vs '.join(labels[m] for m in names)}, n = {n} latent values, trained on {dataset}{trained_for}, "
                f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
    selected = [f"test digit {k}" for k in INITIAL_DIGITS] + ["question mark"]
    selected = [s for s in selected if any(i.name == s for i in inputs)]
    models = [PageModel(name, trained[name].description, exports[name],
                        [code_summary(c) for c in codes[name]], list(shown[name])) for name in names]
    # The pixels some training image or page input inks: the encoders' other rows are never read.
    flat = np.asarray(splits.x_train, np.float32).reshape(len(splits.x_train), -1)
    pixels = np.nonzero((flat != 0).any(0) | (x_inputs.reshape(len(x_inputs), -1) != 0).any(0))[0]
    table = range_table(codes, seeds, shown, {m: ORIGINAL_RANGES[m] for m in names if m in ORIGINAL_RANGES})
    hidden = {name: " and ".join(map(str, hidden_widths(exports[name][0]))) for name in names}
    rows = claims(table, hidden=hidden)
    data = page_data(models, seeds, inputs, selected, subtitle, weight_format=weight_format,
                     footer=f"Written by ae_jax ({command or 'build_explorer'}). The encoder and decoder run in this "
                            f"page's JavaScript from the trained weights, BatchNorm folded in, stored as "
                            f"{format_text(weight_format)} and computed in float32; nothing is fetched.",
                     notes=page_notes(rows, len(seeds)), pixels=pixels)
    page = out_dir / "index.html"
    size = write_page(page, data, title=f"{' vs '.join(labels.values())} on {dataset}")
    log(f"wrote {page} ({size / 1e6:.1f} MB)")

    digits = [i for i in inputs if i.name.startswith("test digit")]
    write_json(out_dir / "reference.json",  # two digits and the glyphs: about 0.13 MB per model and seed
               reference_data(trained, digits[:2] + [i for i in inputs if i not in digits]))
    write_json(out_dir / "ranges.json", table)
    pca_figure({m: codes[m][0] for m in names}, splits.y_train, out_dir / "pca.png", out_dir / "pca.npz",
               titles={m: f"{labels[m]} ({m}), seed {seeds[0]}" for m in names})

    shot = None
    if take_screenshot:
        shot = screenshot(page, out_dir / "screenshot.png")
        if shot is None:  # and as it opens on a phone (390 x 844)
            shot = screenshot(page, out_dir / "screenshot_phone.png", size=(390, 844))
        if shot:
            log(f"no screenshot: {shot}")
    readme = explorer_readme(command, dataset, n, seeds, names, labels, table, size, shot is None and take_screenshot,
                             runs=runs_provenance(trained, out_dir), hidden=hidden, weight_format=weight_format)
    atomic_write_text(out_dir / "README.md", readme)
    return {"page": page, "page_bytes": size, "ranges": table, "screenshot": shot is None and take_screenshot,
            "codes": codes}


def runs_provenance(trained: dict[str, TrainedModel], out_dir: Path) -> list[dict]:
    """Per model: its run folder (relative to out_dir), and the revision and command its config.json records."""
    import json
    import os
    out = []
    for name, tm in trained.items():
        rec = {}
        if tm.run_dir is not None and (Path(tm.run_dir) / "config.json").is_file():
            rec = json.loads((Path(tm.run_dir) / "config.json").read_text())
        out.append({"model": name, "run": Path(tm.run_dir).name if tm.run_dir is not None else None,
                    "path": (os.path.relpath(tm.run_dir, out_dir).replace(os.sep, "/") if tm.run_dir is not None
                             else None),
                    "revision": rec.get("revision"), "command": rec.get("command")})
    return out


def explorer_readme(command: str, dataset: str, n: int, seeds: Sequence[int], names: Sequence[str],
                    labels: dict, table: dict, page_bytes: int, has_screenshot: bool, runs: Sequence[dict] = (),
                    hidden: dict | None = None, weight_format: str = WEIGHT_FORMAT) -> str:
    """README.md of the explorer folder."""
    rows = ["| model | shown inputs, ours (mean ± std over seeds) | per seed | farthest shown input, sd from the "
            "training centre (mean ± std) | original article |", "|---|---|---|---|---|"]
    for m in names:
        t = table["models"][m]
        lo, hi = t["over_seeds"]["shown_inputs"]["lo"], t["over_seeds"]["shown_inputs"]["hi"]
        per = ", ".join(_fmt_range(e["shown_inputs"]) for e in t["per_seed"])
        orig = _fmt_range(t["original_shown_range"]) if "original_shown_range" in t else "—"
        pm = lambda a: f"{a['mean']:.2f}" + (f" ± {a['std']:.2f}" if len(seeds) > 1 else "")  # noqa: E731
        rows.append(f"| {labels[m]} ({m}) | [{pm(lo)}, {pm(hi)}] | {per} | "
                    f"{pm(t['over_seeds']['farthest_mahalanobis'])} | {orig} |")
    bits = 32 * n
    made = ["Made with:", "", f"    {command}" if command else "    (build_explorer)", ""]
    if runs:
        made += ["from these training runs (reused when they are complete, trained by the same command otherwise):", "",
                 "| model | run | trained by revision | command |", "|---|---|---|---|"]
        for r in runs:
            link = f"[`{r['run']}`]({r['path']})" if r["path"] else "—"
            made.append(f"| {labels.get(r['model'], r['model'])} ({r['model']}) | {link} | "
                        f"`{r['revision'] or 'not recorded'}` | `{r['command'] or 'not recorded'}` |")
        made.append("")
    parts = [
        f"# Latent explorer: {' vs '.join(labels[m] for m in names)} on {dataset}, n = {n}", "", *made,
        "**Open `index.html` in a browser** (double-click it, or `file://` + its path): it is one self-contained "
        f"file ({page_bytes / 1e6:.1f} MB) with the weights of every model and seed inline; it needs no server, no "
        "network and nothing installed, and it fits a phone's screen. The encoder and decoder run in the page's "
        f"JavaScript from the trained weights (BatchNorm folded into the dense layers), stored as "
        f"{format_text(weight_format)} and "
        "computed in float32: every decoded pixel is within one 8-bit grey level (1/255) of JAX's, so the images "
        "drawn are JAX's to the eye; `reference.json` holds JAX's answers the browser tests check the page against.",
        "",
        "The two models side by side, each on its own axes (their code values are in unrelated units): **drag a "
        "black point** up or down to change one value of the code that model's decoder reads, and its image "
        "changes; the other model's image stays in view. Click inputs to show their codes (the same colour in both "
        "plots); draw your own on the pad; double-click a coloured line (tap it, on a touch screen) to decode that "
        "input with both models; "
        "**Random** draws both black lines from each dimension's training mean and spread; **Average** puts them "
        "back on the training codes' mean, where they start; the seed switch picks one training run of both "
        "models (dimensions of different seeds are unrelated); **Inverted** shows images black on white.", "",
    ]
    if has_screenshot:
        parts += ["The page as it opens, on a 1400×900 screen and on a 390×844 phone:", "",
                  "![the page as it opens](screenshot.png)", "", "![the page on a phone](screenshot_phone.png)", ""]
    parts += [
        "## Value ranges of the codes", "",
        "Over the inputs the page shows (the test digits and the three glyphs; the VAE's code is its mean). Raw "
        "values are in each model's own units, which for the AE are arbitrary (see the claims below); the "
        "Mahalanobis distance (how far a code lies from the training codes' mean, in their own standard "
        "deviations) is not:", "",
        *rows, "",
        ranges_markdown(table, {m: f"{labels[m]} ({m})" for m in names}),
        "`ranges.json` holds every seed's per-dimension min, max and percentiles (1, 5, 25, 50, 75, 95, 99) and "
        "each shown input's Mahalanobis distance.", "",
        claims_markdown(table, hidden=hidden),
        "## PCA of the training codes", "",
        f"![PCA of each model's codes of the training set, seed {seeds[0]}](pca.png)", "",
        "`pca.npz`: the first two principal components of every training image's code (`<model>_pc`), the digit "
        "labels, components, explained variance and mean.", "",
        "## Information", "",
        f"A 32×32 image with 8-bit pixels holds 32·32·8 = 8192 bits; n = {n} float32 values hold {n}·32 = {bits} "
        f"bits, {8192 / bits:g}× fewer. Each doubling of n doubles the code's bits (n = 2: 64, n = 8: 256, "
        "n = 20: 640).", "",
    ]
    return "\n".join(parts)

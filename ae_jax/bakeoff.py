"""The whole study: train what is missing, run every task, write summary.json and the report.

Per model and setting the run directory gains ``tasks.json`` (per-seed task
metrics) and figures. A model whose ``metrics.json`` and ``tasks.json`` both
exist is reused as it is, so a study can be built up model by model across
sessions; ``force`` redoes it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from . import figures, tasks
from .data import Splits, load_splits
from .experiment import ConfigError, ExperimentConfig, check_same_config, folder_lock, run_experiment
from .io import aggregate, read_json, write_json
from .registry import CONTESTANTS, get_model
from .runner import evaluate_runs, has_final_checkpoint, load_final_state
from .train import TrainConfig, spec_hparams

SCRATCH = "scratch"


@dataclasses.dataclass
class BakeoffConfig:
    dataset: str = "mnist"
    models: Sequence[str] = CONTESTANTS
    seeds: int = 5
    epochs: int = 60
    data_dir: str | None = None
    out: Path | None = None  # default results/<dataset>
    force: bool = False
    command: str = ""

    @property
    def root(self) -> Path:
        return Path(self.out) if self.out is not None else Path("results") / self.dataset


class _SplitCache:
    def __init__(self, dataset: str, data_dir: str | None):
        self.dataset, self.data_dir, self._c = dataset, data_dir, {}

    def __call__(self, variant: str) -> Splits:
        if variant not in self._c:
            self._c[variant] = load_splits(self.dataset, variant, self.data_dir)
        return self._c[variant]


def _tcfg(cfg: ExperimentConfig) -> TrainConfig:
    return TrainConfig(latent_dim=cfg.latent, epochs=cfg.epochs, batch_size=cfg.batch_size)


def _done(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists() and (run_dir / "tasks.json").exists()


def model_tasks(cfg: ExperimentConfig, run_dir: Path, splits: Callable[[str], Splits],
                log: Callable[[str], None] = print) -> dict:
    """Every task for one trained experiment; writes figures and tasks.json, returns its content."""
    spec, tcfg = get_model(cfg.model), _tcfg(cfg)
    seeds = cfg.seed_list
    hps = [spec_hparams(spec, None, cfg.lr)] * len(seeds)
    state = load_final_state(spec, tcfg, len(seeds), run_dir / "checkpoints")
    if state is None:
        raise ConfigError(f"{run_dir}: no final checkpoint to evaluate; pass --force to retrain")
    t0 = time.perf_counter()
    s = splits(cfg.variant)
    one = jax.tree.map(lambda a: a[0], state)  # the first seed draws the figures
    fig_key = tasks.run_keys(seeds[0])["task"]
    per_seed: dict[str, list] = {}
    figs: dict[str, str] = {}
    laps: dict[str, float] = {}
    lap = {"name": None, "t": time.perf_counter()}

    def step(name: str, message: str) -> None:
        """Log the next task and charge the time since the last call to the previous one."""
        now = time.perf_counter()
        if lap["name"]:
            laps[lap["name"]] = laps.get(lap["name"], 0.0) + now - lap["t"]
        lap.update(name=name, t=now)
        if message:
            log(message)

    step("reconstruction", "    reconstructing the test set")
    ev = evaluate_runs(spec, tcfg, state, seeds, hps, s.x_test)
    recon = tasks.decode_images(spec, tcfg, one, ev["z"][0, : tasks.N_SHOW])
    figures.image_rows([s.x_test[: tasks.N_SHOW], recon], run_dir / "reconstructions.png",
                       [f"{cfg.model}: test images", "reconstructions (seed %d)" % seeds[0]])
    figs["reconstructions"] = "reconstructions.png"
    per_seed["test_bce"] = ev["bce"].mean(1)

    if not cfg.anomaly:  # PROTOCOL: the n = 2 runs serve the anomaly task (and latent structure) only
        step("interpolation", "    interpolating")
        for fixed in ([False, True] if spec.is_vae else [False]):
            frames = tasks.interpolation_frames(spec, tcfg, one, hps[0], s.x_test[:2],
                                                jax.random.fold_in(fig_key, 4), fixed)
            name = "interpolation_fixed_noise.gif" if fixed else "interpolation.gif"
            figures.write_gif(frames, run_dir / name)
            figs[name.removesuffix(".gif")] = name

    if spec.has_prior:
        step("samples", "")
        z = tasks.prior_samples(spec, one, jax.random.fold_in(fig_key, 3), tasks.N_SHOW, cfg.latent)
        figures.image_grid(tasks.decode_images(spec, tcfg, one, z), run_dir / "samples.png", cols=4,
                           title=f"{cfg.model} samples")
        figs["samples"] = "samples.png"

    step("latent_structure", f"    latent structure ({len(seeds)} seeds)")
    for i, sd in enumerate(seeds):
        emb = tasks.embed_2d(ev["z"][i], sd, log)
        for k, v in tasks.structure_scores(emb, s.y_test, sd).items():
            per_seed.setdefault(k, []).append(v)
        if i == 0:
            how = "UMAP of" if cfg.latent > 2 else "raw"
            figures.latent_scatter(emb, s.y_test, run_dir / "latent.png",
                                   f"{cfg.model} ({cfg.variant}): {how} n = {cfg.latent} codes, seed {sd}")
            figs["latent"] = "latent.png"

    if cfg.anomaly:
        step("anomaly", "    anomaly scores")
        pos = tasks.anomaly_labels(s.y_test)
        curves = []
        for i in range(len(seeds)):
            auc, fpr, tpr = tasks.roc_auc(ev["bce"][i], pos)
            curves.append((fpr, tpr, auc))
            per_seed.setdefault("anomaly_auc", []).append(auc)
            per_seed.setdefault("anomaly_auc_signed_bug", []).append(tasks.roc_auc(ev["signed_error"][i], pos)[0])
        figures.roc_figure(curves, seeds, run_dir / "roc.png", f"{cfg.model}: class 1 as anomaly (score: BCE)")
        figs["roc"] = "roc.png"
    else:
        lab = splits("labelled")
        step("probe", f"    linear probe on {len(lab.x_train)} labels (all seeds in one program)")
        h = {"train": evaluate_runs(spec, tcfg, state, seeds, hps, lab.x_train)["h"], "val": None, "test": ev["h"]}
        h["val"] = evaluate_runs(spec, tcfg, state, seeds, hps, lab.x_val)["h"]
        probe = tasks.linear_probe(spec, tcfg, state, seeds, hps, h,
                                   {"train": lab.y_train, "val": lab.y_val, "test": lab.y_test})
        per_seed["probe_accuracy"] = probe["test_accuracy"]
        per_seed["probe_best_epoch"] = probe["best_epoch"]

    step("", "")
    m = read_json(run_dir / "metrics.json")
    t = m["timing"]
    per_seed["train_time_s"] = [t["train_time_s"]] * len(seeds)
    per_seed["compile_time_s"] = [t["compile_time_s"]] * len(seeds)
    per_seed["seed_samples_per_s"] = [t["seed_samples_per_s"]] * len(seeds)
    out = {"model": cfg.model, "variant": cfg.variant, "latent_dim": cfg.latent, "seeds": seeds,
           "metrics": {k: aggregate(np.asarray(v, np.float64)) for k, v in per_seed.items()},
           "figures": figs, "task_time_s": time.perf_counter() - t0, "task_seconds": laps,
           "seed_samples_per_s": t["seed_samples_per_s"], "device": m["device"]}
    write_json(run_dir / "tasks.json", out)
    return out


def scratch_tasks(bcfg: BakeoffConfig, splits: Callable[[str], Splits], log=print) -> dict:
    path = bcfg.root / SCRATCH / "tasks.json"
    seeds = list(range(bcfg.seeds))
    if path.exists() and not bcfg.force:
        _check_scratch_seeds(bcfg)
        return read_json(path)
    log(f"[{SCRATCH}] encoder + linear layer from scratch on the labelled images")
    lab = splits("labelled")
    t0 = time.perf_counter()
    r = tasks.scratch_baseline(seeds, lab.x_train, lab.y_train, lab.x_val, lab.y_val, lab.x_test, lab.y_test)
    out = {"model": SCRATCH, "seeds": seeds, "n_labelled": int(len(lab.x_train)),
           "metrics": {"probe_accuracy": aggregate(r["test_accuracy"]), "probe_best_epoch": aggregate(r["best_epoch"])},
           "task_time_s": time.perf_counter() - t0}
    write_json(path, out)
    return out


def run_dirs(bcfg: BakeoffConfig, models: Sequence[str]) -> dict[str, dict[str, str]]:
    """{model: {"full": dir name, "anomaly": dir name}} under the bake-off root."""
    return {m: {v: ExperimentConfig(model=m, dataset=bcfg.dataset, anomaly=v == "anomaly", seeds=bcfg.seeds,
                                    epochs=bcfg.epochs).name() for v in ("full", "anomaly")} for m in models}


def _check_scratch_seeds(bcfg: BakeoffConfig) -> None:
    path = bcfg.root / SCRATCH / "tasks.json"
    seeds = list(range(bcfg.seeds))
    made_with = read_json(path).get("seeds") if path.exists() else seeds
    if made_with != seeds:
        raise ConfigError(f"{path} was made with seeds {made_with}, not {seeds}; "
                          "pass --force to redo it or --out to write elsewhere")


def summarize(root: Path, dirs: dict[str, dict[str, str]]) -> dict:
    """summary.json: {model: {metric: {mean, std, values}}}; anomaly-setting metrics prefixed "anomaly_"."""
    summary: dict[str, dict] = {}
    for m, d in dirs.items():
        entry = {}
        for variant, prefix in (("full", ""), ("anomaly", "anomaly_")):
            p = root / d[variant] / "tasks.json"
            if not p.exists():
                continue
            for k, v in read_json(p)["metrics"].items():
                name = k if k.startswith("anomaly_") or not prefix else prefix + k
                entry[name] = {"mean": v["mean"], "std": v["std"], "values": v["values"]}
        if entry:
            summary[m] = entry
    p = root / SCRATCH / "tasks.json"
    if p.exists():
        summary[SCRATCH] = {k: {"mean": v["mean"], "std": v["std"], "values": v["values"]}
                            for k, v in read_json(p)["metrics"].items()}
    return summary


def run_bakeoff(bcfg: BakeoffConfig, log: Callable[[str], None] = print) -> dict:
    for m in bcfg.models:
        get_model(m)  # unknown names fail before anything runs
    splits = _SplitCache(bcfg.dataset, bcfg.data_dir)
    splits("full")  # missing data fails before anything is written
    root = bcfg.root
    t_start = time.perf_counter()
    plan = [ExperimentConfig(model=m, dataset=bcfg.dataset, anomaly=anomaly, seeds=bcfg.seeds, epochs=bcfg.epochs)
            for m in bcfg.models for anomaly in (False, True)]
    if not bcfg.force:  # refuse mismatches before hours of training, not after
        for cfg in plan:
            check_same_config(root / cfg.name(), cfg)
        _check_scratch_seeds(bcfg)
    with folder_lock(root):  # one bake-off per results folder at a time
        return _train_and_report(bcfg, plan, splits, log, t_start)


def _train_and_report(bcfg: BakeoffConfig, plan: Sequence[ExperimentConfig], splits: _SplitCache,
                      log: Callable[[str], None], t_start: float) -> dict:
    from .report import write_report
    root = bcfg.root
    for cfg in plan:
        run_dir = root / cfg.name()
        tag = f"[{cfg.name()}]"
        if _done(run_dir) and not bcfg.force:
            log(f"{tag} done already (--force redoes it)")
            continue
        has_metrics = (run_dir / "metrics.json").exists()
        if bcfg.force or not has_metrics:
            log(f"{tag} training")
            run_experiment(cfg, out=run_dir, force=bcfg.force, command=bcfg.command, log=log,
                           splits=splits(cfg.variant))
        elif not has_final_checkpoint(_tcfg(cfg), run_dir / "checkpoints"):
            # e.g. a fresh clone: checkpoints are not committed. Train again (resuming any partial
            # checkpoint); the committed metrics.json is replaced only once the new one is written.
            log(f"{tag} its trained parameters are not here (checkpoints are not committed): training again")
            run_experiment(cfg, out=run_dir, command=bcfg.command, log=log, splits=splits(cfg.variant),
                           reuse_complete=False)
        log(f"{tag} tasks")
        model_tasks(cfg, run_dir, splits, log)
    scratch_tasks(bcfg, splits, log)
    dirs = run_dirs(bcfg, list(CONTESTANTS) + [m for m in bcfg.models if m not in CONTESTANTS])
    summary = summarize(root, dirs)
    write_json(root / "summary.json", summary)
    write_report(root, summary, bcfg, dirs, session_s=time.perf_counter() - t_start)
    log("\n" + summary_table(summary))
    log(f"\nbake-off summary: {root / 'summary.json'}; report: {root / 'README.md'}")
    return summary


SUMMARY_COLUMNS = ("test_bce", "probe_accuracy", "knn_accuracy", "anomaly_auc", "train_time_s")


def summary_table(summary: dict) -> str:
    """The headline numbers, one row per model, mean ± std."""
    from .io import fmt_mean_std
    rows = [("model",) + SUMMARY_COLUMNS]
    for m, e in summary.items():
        rows.append((m,) + tuple(fmt_mean_std(e[k]) if k in e else "" for k in SUMMARY_COLUMNS))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)

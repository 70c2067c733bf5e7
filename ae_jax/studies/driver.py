"""One driver for every study: lock, check configs, train what is missing, run the tasks, summarise, report.

A study (``Study``) says which runs it needs (``plan``: experiment configs,
each with the tasks to put it through), which baselines it compares with,
how its summary is keyed and what its report says. The driver does the rest
the same way for every study:

- every planned config is validated and compared with what its run folder
  already holds before anything trains (a mismatch is refused, not overwritten);
- run folders live at ``<results root>/<run name>``, the name ``run.py`` gives
  them, so studies that need the same run share it instead of training it twice;
- a run is trained when its ``metrics.json`` is missing; when it has one but a
  task is missing and the checkpoints are not at hand (they are not committed),
  it is trained again, and its committed files are replaced only when the new
  ones are written;
- each task's numbers go to ``<run>/tasks/<task>.json``; a task already there
  for the same seeds is reused (``force`` redoes everything); on an
  accelerator, a task with work for other processes (latent_structure's UMAP
  fits) leaves it running and is finished after the last run, so the device
  does not wait for the CPU;
- the study's ``summary.json`` and report go to ``<results root>/<study folder>``,
  which is locked while the study runs.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Sequence

from ..cache import compilation as compile_cache
from ..data import Splits, load_splits
from ..io import METRICS_KEYS, RUNS_ROOT, TASK_KEYS, read_json, write_json
from ..models import get_model
from ..tasks import EvalContext, get_task, run_task, start_task, task_done, task_path, umap_pool
from ..trainer import (ConfigError, ExperimentConfig, check_same_config, folder_lock,
                       get_model_or_error, has_final_checkpoint, load_final_state, run_experiment)
from ..trainer.provenance import made_by, provenance

TIMING = ("train_time_s", "compile_time_s", "seed_samples_per_s")


class TimeLedger:
    """Where one invocation of a study spends its wall-clock time, printed as one line when it ends.

    ``timed(what)`` adds the seconds of its block to ``what``, and the seconds
    of XLA compiling done in it (``compile_cache``); a block timed inside
    another counts only for itself (its parent gets the rest), so the parts and
    "other" add up to the whole. The compiling of a part is inside its seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 compiled: Callable[[], float] = lambda: compile_cache.tally()["seconds"]):
        self._meters = (clock, compiled)
        self._start = self._read()
        self.seconds: collections.Counter[str] = collections.Counter()
        self.compiling: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()
        # per open block (the first: none): its name and the (seconds, compiling) of the blocks timed inside it
        self._open: list[tuple[str | None, list[float]]] = [(None, [0.0, 0.0])]

    def _read(self) -> tuple[float, float]:
        return self._meters[0](), self._meters[1]()

    def _since(self, then: tuple[float, float]) -> tuple[float, float]:
        now = self._read()
        return now[0] - then[0], now[1] - then[1]

    @contextlib.contextmanager
    def timed(self, what: str):
        t0 = self._read()
        self._open.append((what, [0.0, 0.0]))
        try:
            yield
        finally:
            (spent, comp), (_, (inner, inner_comp)) = self._since(t0), self._open.pop()
            self.seconds[what] += spent - inner
            self.compiling[what] += comp - inner_comp
            # a block inside one of its own name is the same time, counted once
            self.counts[what] += all(name != what for name, _ in self._open)
            outer = self._open[-1][1]
            outer[0] += spent
            outer[1] += comp

    def total(self) -> float:
        """Wall-clock seconds since the ledger was made."""
        return self._since(self._start)[0]

    def parts(self) -> tuple[tuple[float, float], dict[str, tuple[float, float]]]:
        """(total seconds, total compiling) and {what: (seconds, compiling)}, largest first, "other" (untimed)
        last; the parts sum to the totals."""
        total = self._since(self._start)
        out = {what: (s, self.compiling[what]) for what, s in self.seconds.most_common()}
        out["other"] = (max(0.0, total[0] - sum(self.seconds.values())),
                        max(0.0, total[1] - sum(self.compiling.values())))
        return total, out

    def describe(self) -> str:
        """'time: T s in this invocation (compiling C s): training A s (×2; compiling B s), ..., other D s'.

        Parts under 0.05 s are left out (on a CPU, starting no UMAP workers takes none).
        """
        (total, compiling), parts = self.parts()

        def part(what: str, s: float, comp: float) -> str:
            notes = ([f"×{self.counts[what]}"] if self.counts[what] > 1 else []) + \
                    ([f"compiling {_secs(comp)}"] if comp >= 0.05 else [])
            return f"{what} {_secs(s)}" + (f" ({'; '.join(notes)})" if notes else "")

        return (f"time: {_secs(total)} in this invocation (compiling {_secs(compiling)}): "
                + ", ".join(part(w, s, c) for w, (s, c) in parts.items() if s >= 0.05 or w == "other"))


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


@dataclasses.dataclass
class StudyOptions:
    dataset: str = "mnist"
    models: Sequence[str] | None = None  # None: the study's own list
    seeds: int = 5
    epochs: int = 60
    data_dir: str | None = None
    out: Path | None = None  # the results root; default runs/<dataset> (committed results: results/<dataset>)
    force: bool = False
    command: str = ""
    # settings a study may take from the command line (None: the study's own)
    latent_dims: Sequence[int] | None = None
    loss: str | None = None
    widths: Sequence[str] | None = None

    @property
    def root(self) -> Path:
        return Path(self.out) if self.out is not None else RUNS_ROOT / self.dataset


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    cfg: ExperimentConfig
    tasks: tuple[str, ...]


@dataclasses.dataclass
class RunResult:
    """What a study gets back for one planned run."""
    planned: PlannedRun
    run_dir: Path
    metrics: dict                # metrics.json
    tasks: dict[str, dict]       # task name -> tasks/<task>.json
    unavailable: tuple[str, ...] = ()  # planned tasks a run from older code has no numbers for

    def entry(self) -> dict[str, dict]:
        """{metric: {"mean", "std", "values"}}: metrics.json's numbers, every task's, and the training time."""
        out = {}
        for k, v in (self.metrics.get("metrics") or {}).items():
            out[k] = v
        for t in self.tasks.values():
            out.update(t["metrics"])
        timing, n = self.metrics["timing"], len(self.planned.cfg.seed_list)
        for k in TIMING:  # shared by all seeds: one program trains them together
            v = timing.get(k)
            out[k] = {"mean": v, "std": 0.0 if n > 1 else None, "values": [v] * n}
        return {k: {"mean": v["mean"], "std": v["std"], "values": v["values"]} for k, v in out.items()}


class Study:
    """A plan of runs, the tasks it puts them through, its baselines, its summary and its report."""
    name = ""
    folder = ""  # where summary.json and the report go, under the results root ("" = the root itself)
    baselines: tuple[str, ...] = ()

    def baseline_tasks(self, name: str) -> tuple[str, ...]:
        """The tasks that make up baseline `name` (their numbers are merged into one summary entry)."""
        return (name,)

    def plan(self, opts: StudyOptions) -> list[PlannedRun]:
        raise NotImplementedError

    def summarize(self, results: list[RunResult], baselines: dict[str, dict]) -> dict:
        raise NotImplementedError

    def report(self, out_dir: Path, summary: dict, results: list[RunResult], opts: StudyOptions,
               session_s: float) -> None:
        raise NotImplementedError

    def headline(self, summary: dict) -> str:
        """A few lines for the terminal when the study ends."""
        return ""


class SplitCache:
    """Each variant of the dataset loaded once per study."""

    def __init__(self, dataset: str, data_dir: str | None, ledger: TimeLedger | None = None):
        self.dataset, self.data_dir, self._c = dataset, data_dir, {}
        self.ledger = ledger or TimeLedger()

    def __call__(self, variant: str) -> Splits:
        if variant not in self._c:
            with self.ledger.timed("loading data"):
                self._c[variant] = load_splits(self.dataset, variant, self.data_dir)
        return self._c[variant]


def _collect(p: PlannedRun, run_dir: Path, tasks: Sequence[str]) -> RunResult:
    return RunResult(p, run_dir, read_json(run_dir / "metrics.json", METRICS_KEYS),
                     {t: read_json(task_path(run_dir, t), TASK_KEYS) for t in tasks})


# The tasks the single tasks.json of version 0.1 covered. A run finished by that code (its checkpoints are
# gone) still counts as done for these tasks, so its committed numbers are reported, not retrained; the
# report names it as a run from older code. Tasks added since (sample and interpolation quality, label
# budgets) need the trained parameters: for such a run they are not available, and the report says so.
LEGACY_TASKS = frozenset({"reconstruction", "interpolation", "samples", "latent_structure", "anomaly", "probe"})


def _legacy(p: PlannedRun, run_dir: Path, tasks: Sequence[str]) -> RunResult | None:
    path = run_dir / "tasks.json"
    if not (path.exists() and (run_dir / "metrics.json").exists()) or not set(tasks) & LEGACY_TASKS:
        return None
    old = read_json(path, ("metrics",))
    if old.get("seeds") != p.cfg.seed_list:
        return None
    return RunResult(p, run_dir, read_json(run_dir / "metrics.json", METRICS_KEYS),
                     {"tasks.json": {"metrics": old["metrics"], "seconds": old.get("task_time_s", 0.0)}},
                     tuple(t for t in tasks if t not in LEGACY_TASKS))


def applicable_tasks(p: PlannedRun) -> list[str]:
    spec = get_model(p.cfg.model)
    return [t for t in p.tasks if get_task(t).applies(spec)]


def ensure_run(p: PlannedRun, opts: StudyOptions, splits: SplitCache, log: Callable[[str], None]) -> RunResult:
    """Train the run if needed, run its missing tasks, and return its numbers."""
    return start_run(p, opts, splits, log)()


def training_needed(p: PlannedRun, opts: StudyOptions) -> bool:
    """Whether ``start_run`` would train p's run: its metrics are missing (or ``force``), or a task is missing and
    its checkpoints are not at hand (a run of older code, reported as it is, is not retrained)."""
    cfg = p.cfg
    run_dir = opts.root / cfg.name()
    tasks = applicable_tasks(p)
    if opts.force or not (run_dir / "metrics.json").exists():
        return True
    if not any(not task_done(run_dir, t, cfg.seed_list) for t in tasks):
        return False
    if has_final_checkpoint(cfg.train_config(), run_dir / "checkpoints"):
        return False
    return _legacy(p, run_dir, tasks) is None


def train_shared_programs(plan: Sequence[PlannedRun], opts: StudyOptions, splits: SplitCache,
                          log: Callable[[str], None]) -> set[Path]:
    """Train together the planned runs that need training and are one program (``trainer.together``: the
    Gaussian models at their betas); the run folders trained, which ``start_run`` then finds complete."""
    from ..trainer.together import group_by_program, train_together
    need = [p for p in plan if p.cfg.snapshots == 0 and training_needed(p, opts)]
    done: set[Path] = set()
    for group in group_by_program([p.cfg for p in need]):
        if len(group) < 2:
            continue
        cfgs = [need[i].cfg for i in group]
        dirs = [opts.root / c.name() for c in cfgs]
        with splits.ledger.timed("training"):
            train_together(cfgs, dirs, splits(cfgs[0].variant), opts.root, opts.command, log, force=opts.force)
        done.update(dirs)
    return done


def start_run(p: PlannedRun, opts: StudyOptions, splits: SplitCache, log: Callable[[str], None],
              later: list | None = None, trained: set[Path] = frozenset()) -> Callable[[], RunResult]:
    """``ensure_run``, returning what reads the run's numbers.

    `later`: a list where a task that leaves work running in the background
    (the UMAP fits on an accelerator: ``Task.start``) puts what finishes it;
    the numbers can be read once ``finish_later`` has run them. None: every
    task runs whole now. `trained`: run folders trained in this invocation
    already (``train_shared_programs``), not to be trained again.
    """
    cfg, spec = p.cfg, get_model(p.cfg.model)
    timed = splits.ledger.timed
    run_dir = opts.root / cfg.name()
    tag = f"[{cfg.name()}]"
    tasks = applicable_tasks(p)
    has_metrics = (run_dir / "metrics.json").exists()
    missing = [t for t in tasks if opts.force or not task_done(run_dir, t, cfg.seed_list)]
    collect = functools.partial(_collect, p, run_dir, tasks)
    if has_metrics and not missing and not opts.force:
        log(f"{tag} done already, reused: made by {made_by(run_dir)} (--force redoes it)")
        return collect
    legacy = None if opts.force else _legacy(p, run_dir, tasks)
    if legacy is not None and not has_final_checkpoint(cfg.train_config(), run_dir / "checkpoints"):
        log(f"{tag} done by older code (its tasks.json); reported as it is (--force redoes it)"
            + (f"; not available for it: {', '.join(legacy.unavailable)}" if legacy.unavailable else ""))
        return lambda: legacy
    how = None  # run_experiment's arguments when the run is (re)trained
    if run_dir in trained:
        log(f"{tag} trained together with the models of its program")
    elif opts.force or not has_metrics:
        log(f"{tag} training")
        how = {"force": opts.force}
    elif not has_final_checkpoint(cfg.train_config(), run_dir / "checkpoints"):
        # e.g. a fresh clone: checkpoints are not committed. Train again (resuming any partial
        # checkpoint); the committed metrics.json is replaced only once the new one is written.
        log(f"{tag} its trained parameters are not here (checkpoints are not committed): training again")
        how = {"reuse_complete": False}
    if how is not None:
        with timed("training"):
            run_experiment(cfg, out=run_dir, command=opts.command, log=log, splits=splits(cfg.variant), **how)
    if not missing:  # a run planned for its metrics (and files) alone: no trained state needed
        return collect
    with timed("restoring checkpoints"):
        state = load_final_state(spec, cfg.train_config(), len(cfg.seed_list), run_dir / "checkpoints")
    if state is None:
        raise ConfigError(f"{run_dir}: no final checkpoint to evaluate; pass --force to retrain")
    ctx = EvalContext(spec, cfg, state, run_dir, splits, log, opts.command)
    lock = contextlib.ExitStack()  # the run's folder stays locked until its last task is written
    lock.enter_context(folder_lock(run_dir))
    left: list = []  # finishers of tasks whose work still runs
    try:
        for t in missing:
            log(f"{tag} task {t}")
            with timed(f"task {t}"):
                finish = start_task(get_task(t), ctx, background=later is not None)
                if finish.waits:
                    left.append((t, finish))
                else:
                    finish()  # written now: an interruption later loses nothing of it
    except BaseException:
        lock.close()
        raise
    if left:
        later.append(Unfinished(tag, run_dir, left, lock))
    else:
        _done_with(run_dir, lock)
    return collect


def _done_with(run_dir: Path, lock: contextlib.ExitStack) -> None:
    (run_dir / "tasks.json").unlink(missing_ok=True)  # the single file older code wrote: now stale
    lock.close()


@dataclasses.dataclass
class Unfinished:
    """A run's tasks left running by ``start_run`` (its folder stays locked until they are written)."""
    tag: str
    run_dir: Path
    tasks: list  # (task name, finisher)
    lock: contextlib.ExitStack


def finish_later(later: list, ledger: TimeLedger, log: Callable[[str], None]) -> None:
    """Finish the tasks ``start_run`` left in `later` (waiting for what still runs), writing their files; each
    run's folder is unlocked once its tasks are written."""
    while later:
        u = later[0]
        with ledger.timed("finishing tasks left running"):
            while u.tasks:
                u.tasks[0][1]()
                u.tasks.pop(0)
        later.pop(0)
        _done_with(u.run_dir, u.lock)


def abandon_later(later: list) -> None:
    """Stop what the tasks in `later` left running and unlock their runs' folders (nothing of them is written)."""
    umap_pool.close_workers(kill=True)
    for u in later:
        u.lock.close()
    later.clear()


def baseline_dir(opts: StudyOptions, name: str) -> Path:
    return opts.root / name


def ensure_baseline(name: str, opts: StudyOptions, splits: SplitCache, log: Callable[[str], None],
                    tasks: Sequence[str] | None = None) -> dict:
    """Run baseline `name`'s tasks (default: the task of that name) where missing, in the folder of that name.

    Returns the first task's file with "metrics" merged from all of them and
    "tasks": {task: its file}.
    """
    folder = baseline_dir(opts, name)
    cfg = ExperimentConfig(model=name, dataset=opts.dataset, seeds=opts.seeds, epochs=opts.epochs)
    files, ran = {}, []
    for t in tasks or (name,):
        if opts.force or not task_done(folder, t, cfg.seed_list):
            with folder_lock(folder), splits.ledger.timed(f"task {t}"):
                run_task(get_task(t), EvalContext(None, cfg, None, folder, splits, log, opts.command))
                (folder / "tasks.json").unlink(missing_ok=True)
            ran.append(t)
        files[t] = read_json(task_path(folder, t), TASK_KEYS)
    if ran:
        write_json(folder / "config.json", baseline_record(name, cfg, list(files), opts.command, splits(cfg.variant)))
    first = next(iter(files.values()))
    merged = {k: v for f in files.values() for k, v in f["metrics"].items()}
    return {**first, "metrics": merged, "tasks": files}


def baseline_record(name: str, cfg: ExperimentConfig, tasks: list[str], command: str, data: Splits) -> dict:
    """A baseline folder's config.json: which baseline, its tasks and seeds, and the command that ran them.

    A baseline trains no autoencoder, so it has no run configuration; like a run's, the record says what
    was asked for and by which command, source revision and data.
    """
    return {"baseline": name, "dataset": cfg.dataset, "seeds": cfg.seeds, "seed_list": cfg.seed_list,
            "tasks": tasks, **provenance(command, data)}


def _check_baseline_seeds(name: str, opts: StudyOptions, tasks: Sequence[str] | None = None) -> None:
    want = list(range(opts.seeds))
    for t in tasks or (name,):
        path = task_path(baseline_dir(opts, name), t)
        if path.exists() and (made := read_json(path, TASK_KEYS)["seeds"]) != want:
            raise ConfigError(f"{path} was made with seeds {made}, not {want}; "
                              "pass --force to redo it or --out to write elsewhere")


def warm_umap(plan: Sequence[PlannedRun], opts: StudyOptions, splits: SplitCache,
              log: Callable[[str], None]) -> bool:
    """On an accelerator, start the UMAP workers compiling while the first run trains (the CPU waits then).

    Only where some run still needs UMAP fits (latent_structure at n > 2); on
    a CPU the training itself needs the cores, so nothing starts early there.
    True when the workers were started.
    """
    import jax
    if jax.default_backend() == "cpu":
        return False
    need = [p for p in plan if p.cfg.latent > 2 and "latent_structure" in applicable_tasks(p)
            and (opts.force or not task_done(opts.root / p.cfg.name(), "latent_structure", p.cfg.seed_list))]
    if not need:
        return False
    workers = umap_pool.background_workers(sum(len(p.cfg.seed_list) for p in need))
    umap_pool.warm_up(workers, splits("full").x_test.shape[0], log)
    return workers > 1


def run_study(study: Study, opts: StudyOptions, log: Callable[[str], None] = print) -> dict:
    """Everything the study needs, trained and evaluated where missing; returns its summary."""
    plan = study.plan(opts)
    for p in plan:  # unknown names and impossible values fail before anything runs
        get_model_or_error(p.cfg.model)
        p.cfg.validate()
        for t in p.tasks:
            get_task(t)
    compiled, ledger = compile_cache.tally(), TimeLedger()  # the closing lines count from the same point
    splits = SplitCache(opts.dataset, opts.data_dir, ledger)
    splits("full")  # missing data fails before anything is written
    if not opts.force:  # refuse mismatches before hours of training, not after
        for p in plan:
            check_same_config(opts.root / p.cfg.name(), p.cfg, splits(p.cfg.variant))
        for b in study.baselines:
            _check_baseline_seeds(b, opts, study.baseline_tasks(b))
    out_dir = opts.root / study.folder
    later = None  # on an accelerator: the tasks whose UMAP fits run on while the study goes on
    try:
        with folder_lock(out_dir):  # one run of a study per results folder at a time
            with ledger.timed("starting UMAP workers"):
                later = [] if warm_umap(plan, opts, splits, log) else None
            trained = train_shared_programs(plan, opts, splits, log)
            collect = [start_run(p, opts, splits, log, later, trained) for p in plan]
            if later is not None:
                finish_later(later, ledger, log)
            results = [c() for c in collect]
            baselines = {b: ensure_baseline(b, opts, splits, log, study.baseline_tasks(b))
                         for b in study.baselines}
            with ledger.timed("summary and report"):
                summary = study.summarize(results, baselines)
                write_json(out_dir / "summary.json", summary)
                study.report(out_dir, summary, results, opts, session_s=ledger.total())
    except BaseException as e:
        if later is not None:  # fits (or the warm-up's) still running, for tasks that will not be finished:
            abandon_later(later)  # stopped now, not one worker after another at exit
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C or a scheduler's stop: where the time went is worth keeping
            log(compile_cache.describe(since=compiled))
            log(ledger.describe())
        raise
    head = study.headline(summary)
    if head:
        log("\n" + head)
    log(f"\n{study.name} summary: {out_dir / 'summary.json'}; report: {out_dir / 'README.md'}")
    log(compile_cache.describe(since=compiled))
    log(ledger.describe())
    return summary

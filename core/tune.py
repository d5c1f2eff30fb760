"""Hyperparameter search with Optuna over an allowlisted training entry point.

    python -m core.tune --config configs/distillation/sasrec/beauty.yaml --space configs/tune/sasrec.yaml --trials 20
    python -m core.tune --config configs/distillation/sasrec.yaml --space configs/tune/synthetic_smoke.yaml --trials 3

Each trial is an ordinary run of the entry point in a subprocess, ``python -m <entry> --config C
--override <fixed> --override <--override> --override <sampled>,run_name=tune-<study>-tNNN``, so it
trains exactly like a hand-started run, lands in the usual output tree, and ``core`` imports no
pipeline. While it runs its ``metrics.jsonl`` is polled; every validated epoch is reported to
Optuna, and a trial the pruner stops is terminated. Outputs in ``<root>/tune/<study>/``:
``study.db`` (SQLite), ``trials.md``/``trials.json`` and ``best.yaml`` (rewritten after every
trial), and each trial's stdout/stderr in ``logs/``.

- Parameter names are not checked here: only the pipeline's config class knows its keys and
  aliases. A trial refused with exit code 2 (the entry's ``error:`` line) before any trial of the
  study has completed stops the search with that line, so a typo costs one interpreter start.
- Reproducible: before each ``ask`` the sampler is rebuilt with seed ``--seed + i``, ``i`` = trials
  before this one not counting those lost to a killed tuner, so the same seed and history give the
  same parameters, and a resumed search samples what an uninterrupted one would have.
- Resumable: re-running the command continues the study. Trials a killed tuner left RUNNING are
  marked FAIL ("interrupted") and their parameters enqueued again, with their run folder and
  ``training.resume=true``, so they continue from ``last.pt``. ``--trials N`` counts COMPLETE and
  PRUNED trials of the whole study. One tuner per study at a time (a lock file enforces it).
- A space's ``enqueue:`` list (e.g. the shipped recipe) runs first in a new study, so the table
  shows where the search stands against it, measured on the same budget.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from core import store
from core.cli import run
from core.config import parse_overrides, read_yaml
from core.errors import ConfigError, UserError

# entry module -> how trials get separate run folders: a run_name, or (no such key) a home each.
# cross_domain is left out: it is a multi-command CLI, not one training entry point.
ENTRIES = {"distillation.training": "run_name", "user_representation_module.train": "home",
           "recommendation_model.train_eval": "run_name", "universal.train": "run_name"}
RESERVED = {"run_name", "experiment_name", "resume", "training.resume"}  # the tuner sets these
KEY = re.compile(r"^[A-Za-z_][\w@-]*(\.[A-Za-z_][\w@-]*)*$")  # no ',' or '=' can reach the override text
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_S, TERM_GRACE_S, MAX_FAILS_IN_A_ROW = 0.5, 5.0, 5


@dataclass
class Space:
    metric: str
    startup: int  # random trials before TPE models the results
    pruner: optuna.pruners.BasePruner
    fixed: dict
    params: dict  # name -> optuna distribution, in file order (the order values are drawn in)
    spec: dict  # the raw params, stored in the study to refuse a changed space on resume
    enqueue: list  # parameter sets a new study runs first (e.g. the shipped recipe, as the reference)


def _read_yaml(path: Path):
    # the configs' own reader: one-line errors for repeated keys, non-UTF-8 text and bad YAML
    return read_yaml(path)


def _yaml_float(v):
    """YAML 1.1 reads 1e-4 (no dot) as text: such text becomes the number; anything else is returned as is."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _distribution(p, where: str, bad):
    """One ``params:`` entry -> an Optuna distribution."""
    if not isinstance(p, dict):
        raise bad(where, f"expected {{type: float|int|categorical, ...}}, got {p!r}")
    kind = p.get("type")
    if kind not in ("float", "int", "categorical"):
        raise bad(f"{where}.type", f"{kind!r} is not one of float, int, categorical")
    allowed = ("type", "choices") if kind == "categorical" else ("type", "low", "high", "log", "step")
    for k in p:
        if k not in allowed:
            raise bad(f"{where}.{k}", f"unknown key for type {kind} (use {', '.join(allowed)})")
    if kind == "categorical":
        choices = p.get("choices")
        if not isinstance(choices, list) or not choices or \
                not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise bad(f"{where}.choices", "expected a non-empty list of numbers, strings or booleans")
        return CategoricalDistribution(choices)
    values = {}
    for k in ("low", "high", "step"):
        v = p.get(k)
        if kind == "float":
            v = _yaml_float(v)
        ok = isinstance(v, int) if kind == "int" else isinstance(v, (int, float)) and math.isfinite(v)
        if not (ok and not isinstance(v, bool)) and (v is not None or k != "step"):
            raise bad(f"{where}.{k}", f"expected {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
        values[k] = v
    low, high, step, log = values["low"], values["high"], values["step"], p.get("log", False)
    if not isinstance(log, bool):
        raise bad(f"{where}.log", f"expected true or false, got {log!r}")
    if low > high:
        raise bad(f"{where}.low", f"low ({low}) > high ({high})")
    if log and low <= 0:
        raise bad(f"{where}.low", f"log scale needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise bad(f"{where}.step", "must be > 0 and cannot be combined with log: true")
    if kind == "int":
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=step)


def load_space(path: Path) -> Space:
    """Read and strictly validate a search-space file; every problem is one line naming file and key."""
    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {msg}")

    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise bad("params", "needs a non-empty mapping {key: {type: float|int|categorical, ...}}")
    for key in raw:
        if key not in ("metric", "sampler", "pruner", "fixed", "params", "enqueue"):
            raise bad(str(key), "unknown top-level key (use metric, sampler, pruner, fixed, params, enqueue)")

    def section(name: str, defaults: dict) -> dict:
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            raise bad(name, f"expected a mapping, got {value!r}")
        for k, v in value.items():
            if k not in defaults:
                raise bad(f"{name}.{k}", f"unknown key (use {', '.join(defaults)})")
            if k != "type" and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise bad(f"{name}.{k}", f"expected an integer >= 0, got {v!r}")
        return {**defaults, **value}

    def check_key(where: str, key) -> str:
        if not isinstance(key, str) or not KEY.match(key):
            raise bad(f"{where}.{key}", "not a config key (letters, digits, _ and dots)")
        if key in RESERVED:
            raise bad(f"{where}.{key}", "is set by the tuner for every trial")
        return key

    metric = raw.get("metric", "NDCG@10")
    if not isinstance(metric, str) or not metric:
        raise bad("metric", f"expected a metric name such as NDCG@10, got {metric!r}")
    sampler = section("sampler", {"startup_trials": 5})
    pr = section("pruner", {"type": "median", "startup_trials": 2, "warmup_epochs": 0})
    if pr["type"] not in ("median", "none"):
        raise bad("pruner.type", f"{pr['type']!r} is not median or none")
    pruner = (optuna.pruners.NopPruner() if pr["type"] == "none" else
              optuna.pruners.MedianPruner(n_startup_trials=pr["startup_trials"], n_warmup_steps=pr["warmup_epochs"]))
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise bad("fixed", f"expected a mapping of key: value, got {fixed!r}")
    fixed = {check_key("fixed", k): v for k, v in fixed.items()}
    params = {}
    for name, p in raw["params"].items():
        if check_key("params", name) in fixed:
            raise bad(f"params.{name}", "is also under fixed; give it in one place")
        params[name] = _distribution(p, f"params.{name}", bad)
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list):
        raise bad("enqueue", f"expected a list of {{param: value}} mappings, got {enqueue!r}")
    for i, point in enumerate(enqueue):
        if not isinstance(point, dict) or set(point) != set(params):
            raise bad(f"enqueue[{i}]", f"expected a value for each of {', '.join(params)}, got {point!r}")
        for name, value in point.items():
            if isinstance(params[name], FloatDistribution):
                point[name] = value = _yaml_float(value)
            # a value outside its distribution would be sampled anew by Optuna, silently
            if not _inside(params[name], value):
                raise bad(f"enqueue[{i}].{name}", f"{value!r} is outside the space given under params")
    return Space(metric, sampler["startup_trials"], pruner, fixed, params, raw["params"], enqueue)


def _inside(dist, value) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return any(type(value) is type(c) and value == c for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, int if isinstance(dist, IntDistribution) else (int, float)):
        return False
    if not dist.low <= value <= dist.high:
        return False
    if dist.step is None:
        return True
    steps = (value - dist.low) / dist.step
    return abs(steps - round(steps)) < 1e-8


def fmt(value) -> str:
    """A value as override text the entry's YAML-based parser reads back to the same value."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        mant, e, exp = repr(value).partition("e")
        return f"{mant}{'' if '.' in mant else '.0'}e{exp}" if e else mant  # YAML 1.1: 1e-05 is a string
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{fmt(str(k))}: {fmt(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # quoted: commas and colons stay inside the value


def _short(v) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _as_overrides(pairs: dict) -> str:
    return ",".join(f"{k}={fmt(v)}" for k, v in pairs.items())


def _find(path: str, what: str) -> Path:
    """A user-given file: absolute, relative to the current folder, or relative to the repo root."""
    p = Path(path).expanduser()
    for cand in ([p] if p.is_absolute() else [Path.cwd() / p, store.REPO_ROOT / p]):
        if cand.is_file():
            return cand.resolve()
    raise ConfigError(f"{path}: {what} file not found")


def _user_home(config: Path, overrides: list[tuple[str, object]]) -> str:
    """The output root the trials will use: the last ``home`` (or the seed's ``model_dir``) among
    the config file and the overrides, "" for the default ($RECSYS_HOME or <repo>/state_dict)."""
    home = ""

    def walk(node):
        for k, v in (node.items() if isinstance(node, dict) else ()):
            yield str(k), v
            yield from walk(v)

    for key, value in list(walk(_read_yaml(config))) + list(overrides):
        if key.rsplit(".", 1)[-1] in ("home", "model_dir") and not isinstance(value, dict):
            home = str(value or "")
    return home


def _die_with_parent() -> None:
    """In the trial process: be SIGKILLed when the tuner dies, so a killed tuner leaves no orphan
    still writing into the run folder that the resumed search continues (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # not there (yet), or just replaced
        return -math.inf


def _rows(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line still being written: read again at the next poll
            pass
    return [r for r in rows if isinstance(r, dict)]


def run_trial(trial, space: Space, cmd: list[str], search_root: Path, pattern: str, log_dir: Path):
    """Run one trial; returns (state, value, run folder, error line, exit code). Files older than the
    start are ignored: they belong to a killed run not yet resumed, or to a deleted study's run."""
    t0 = time.time()
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"t{trial.number:03d}"
    with open(log_dir / f"{name}.log", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=store.REPO_ROOT, stdout=out, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        best, last_epoch, run_dir = -math.inf, 0, None
        try:
            while True:
                finished = proc.poll() is not None
                if run_dir is None:
                    hits = [p for p in search_root.glob(pattern) if _mtime(p) >= t0]
                    run_dir = max(hits, key=_mtime).parent if hits else None
                for row in _rows(run_dir / "metrics.jsonl") if run_dir else []:
                    if not isinstance(row.get("valid"), dict) or row.get("epoch", 0) <= last_epoch:
                        continue
                    if space.metric not in row["valid"]:
                        raise UserError(f"validation metric {space.metric!r} is not reported by the run; "
                                        f"it has {', '.join(sorted(row['valid']))} (set metric: in the space file)")
                    last_epoch, value = int(row["epoch"]), float(row["valid"][space.metric])
                    trial.report(value, step=last_epoch)
                    best = max(best, value)
                    if not finished and trial.should_prune():
                        _stop(proc)
                        return TrialState.PRUNED, best, run_dir, "", proc.returncode
                if finished:
                    break
                time.sleep(POLL_S)
        finally:
            _stop(proc)  # an error or Ctrl-C here must not leave the trial training
    if proc.returncode != 0:
        lines = [x for x in (log_dir / f"{name}.err").read_text(errors="replace").splitlines() if x.strip()]
        why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        return TrialState.FAIL, None, run_dir, why.removeprefix("error: "), proc.returncode
    results = run_dir / "results.json" if run_dir else None
    if results and _mtime(results) >= t0:
        best = float(json.loads(results.read_text()).get("valid", {}).get(space.metric, best))
    if not math.isfinite(best):
        return TrialState.FAIL, None, run_dir, f"no finite validation {space.metric} (see {log_dir / name}.log)", 0
    return TrialState.COMPLETE, best, run_dir, "", 0


def write_outputs(study, space: Space, study_dir: Path, root: Path, entry: str, user_home: str) -> list[dict]:
    """trials.json, trials.md and best.yaml, each replaced atomically."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        rows.append({"number": t.number, "state": t.state.name,
                     "value": t.value if t.state == TrialState.COMPLETE else t.user_attrs.get("best"),
                     "params": t.params, "minutes": None if not t.duration or t.user_attrs.get("interrupted")
                     else round(t.duration.total_seconds() / 60, 2),
                     "run_dir": t.user_attrs.get("run_dir", ""), "error": t.user_attrs.get("error", "")})
    store.atomic_write_json(study_dir / "trials.json", rows)
    head = ["#", "state", space.metric, *space.params, "minutes", "run folder"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        cells = [str(r["number"]), r["state"], value, *(_short(r["params"].get(p)) for p in space.params),
                 _short(r["minutes"]), r["run_dir"]]
        lines.append("| " + " | ".join(cells) + " |")
    store.atomic_write_text(study_dir / "trials.md", "\n".join(lines) + "\n")
    done = [r for r in rows if r["state"] == "COMPLETE" and (root / r["run_dir"] / "config.yaml").is_file()]
    if done:
        best = max(done, key=lambda r: r["value"])
        # the best run's own config.yaml is the fully resolved config (fixed + sampled applied),
        # written by the fit loop with the same dump as core.config.save_config
        cfg = yaml.safe_load((root / best["run_dir"] / "config.yaml").read_text(encoding="utf-8"))
        if "run_name" in cfg:
            cfg["run_name"] = "tuned"
        if isinstance(cfg.get("training"), dict):
            cfg["training"]["resume"] = False
        if ENTRIES[entry] == "home":
            cfg["home"] = user_home  # not the trial's private home
        path = study_dir / "best.yaml"
        store.atomic_write_text(path, f"# python -m {entry} --config {path}\n# study {study.study_name}, trial "
                                f"{best['number']}: {space.metric} {best['value']:.4f}\n"
                                + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the pipeline's YAML config (the base of every trial)")
    parser.add_argument("--space", required=True, help="search-space YAML (see configs/tune/)")
    parser.add_argument("--trials", type=int, help="stop when the study holds this many COMPLETE + PRUNED trials")
    parser.add_argument("--minutes", type=float, help="start no new trial after this many minutes")
    parser.add_argument("--study", help="study name (default: <config stem>-<space stem>); same name = resume")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (the training seed comes from the config)")
    parser.add_argument("--override", action="append", default=[], metavar='"a=1,b.c=x"',
                        help="overrides applied to every trial after the space's fixed:")
    parser.add_argument("--entry", default="distillation.training", help=f"training entry: {', '.join(ENTRIES)}")
    args = parser.parse_args(argv)
    if args.entry not in ENTRIES:
        raise UserError(f"--entry {args.entry!r} is not a tunable entry point; use one of {', '.join(ENTRIES)}")
    if args.trials is None and args.minutes is None:
        raise UserError("give a budget: --trials N and/or --minutes M")
    if (args.trials is not None and args.trials < 1) or (args.minutes is not None and args.minutes <= 0):
        raise UserError("--trials and --minutes must be > 0")
    config, space_path = _find(args.config, "config"), _find(args.space, "search-space")
    space = load_space(space_path)
    user_over = ",".join(o for o in args.override if o.strip())
    user_home = _user_home(config, list(space.fixed.items()) + parse_overrides(user_over))
    root = store.state_root(user_home or None)
    root = root if root.is_absolute() else store.REPO_ROOT / root  # relative homes are the trials' (cwd = repo)
    study_name = store.check_name(args.study or f"{config.stem}-{space_path.stem}", "study name")
    study_dir = root / "tune" / study_name
    study_dir.mkdir(parents=True, exist_ok=True)
    lock = open(study_dir / ".lock", "w")  # held until exit; the OS drops it if the tuner is killed
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"study {study_name} is in use by another tuner ({study_dir})") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed below
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                pruner=space.pruner, load_if_exists=True)
    in_repo = config.relative_to(store.REPO_ROOT) if config.is_relative_to(store.REPO_ROOT) else config
    setup = json.loads(json.dumps({"entry": args.entry, "config": str(in_repo), "fixed": space.fixed,
                                   "override": user_over, "params": space.spec, "metric": space.metric,
                                   "enqueue": space.enqueue}))
    stored = study.user_attrs.get("setup")
    if stored is None:
        study.set_user_attr("setup", setup)
        for point in space.enqueue:  # once, when the study is new; a resumed study has them already
            study.enqueue_trial(point)
    elif {"enqueue": [], **stored} != setup:  # a study started before enqueue: existed stored no such key
        changed = ", ".join(k for k in setup if stored.get(k) != setup[k])
        raise UserError(f"study {study_name} was started with a different {changed}; "
                        "rerun the same command or choose a new --study name")
    study_id = storage.get_study_id_from_name(study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a killed tuner
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(tid, "interrupted", True)
        storage.set_trial_user_attr(tid, "error", "the tuner stopped during this trial; its parameters run again")
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"run": t.user_attrs.get("run", "")})
        print(f"trial {t.number} was interrupted; its parameters run again")

    base = [sys.executable, "-m", args.entry, "--config", str(config)]
    base += [x for o in (_as_overrides(space.fixed), user_over) if o for x in ("--override", o)]
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    fails = 0
    while True:
        trials = study.get_trials(deepcopy=False)
        if args.trials is not None and sum(t.state in DONE for t in trials) >= args.trials:
            break
        if deadline is not None and time.monotonic() >= deadline:
            print(f"time budget of {args.minutes:g} min reached")
            break
        index = sum(t.state != TrialState.WAITING and not t.user_attrs.get("interrupted") for t in trials)
        study.sampler = optuna.samplers.TPESampler(seed=args.seed + index, n_startup_trials=space.startup)
        trial = study.ask(space.params)
        again = trial.user_attrs.get("run")  # the run folder of an interrupted trial: continue it
        run_name = again or f"tune-{study_name}-t{trial.number:03d}"
        trial.set_user_attr("run", run_name)
        own = {"run_name": run_name} if ENTRIES[args.entry] == "run_name" else \
            {"home": str(study_dir / "homes" / run_name)}
        search_root, pattern = (root, f"*/*/{run_name}/metrics.jsonl") if "run_name" in own else \
            (Path(own["home"]), "*/*/metrics.jsonl")
        cmd = base + ["--override", _as_overrides({**trial.params, **own, "training.resume": bool(again)})]
        try:
            state, value, run_dir, why, code = run_trial(trial, space, cmd, search_root, pattern, study_dir / "logs")
        except UserError as exc:  # the runs do not report the metric: no trial can succeed
            state, value, run_dir, why, code = TrialState.FAIL, None, None, str(exc), None
        if run_dir is not None:
            trial.set_user_attr("run_dir", str(run_dir.relative_to(root) if run_dir.is_relative_to(root) else run_dir))
        if value is not None:
            trial.set_user_attr("best", value)
        if why:
            trial.set_user_attr("error", why)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        write_outputs(study, space, study_dir, root, args.entry, user_home)
        shown = "" if value is None else f" {space.metric} {value:.4f}"
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        print(f"trial {trial.number} {state.name}{shown} | {params}" + (f" | {why}" if why else ""), flush=True)
        fails = fails + 1 if state == TrialState.FAIL else 0
        # the entry refused its config (exit 2: unknown key, bad value...) and no trial ever
        # completed: the config or the space is wrong, and every further trial would fail alike
        refused = code == 2 and not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        if state == TrialState.FAIL and (code is None or refused or fails >= MAX_FAILS_IN_A_ROW):
            raise UserError(f"trial {trial.number} failed: {why} (logs: {study_dir / 'logs'})")
    rows = write_outputs(study, space, study_dir, root, args.entry, user_home)
    print((study_dir / "trials.md").read_text(), end="")
    done = [r for r in rows if r["state"] == "COMPLETE"]
    if done:
        best = max(done, key=lambda r: r["value"])
        print(f"best: trial {best['number']} {space.metric} {best['value']:.4f} | "
              + " ".join(f"{k}={_short(v)}" for k, v in best["params"].items()))
        print(f"train it: python -m {args.entry} --config {study_dir / 'best.yaml'}")
    print(f"study: {study_dir}")
    return 0


if __name__ == "__main__":
    run(main)

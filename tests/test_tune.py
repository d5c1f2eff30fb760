"""``python -m core.tune``: a real search on tiny synthetic data (trials are subprocesses), kill and
resume of the tuner itself, reproducibility from --seed, best.yaml training as an ordinary run,
and strict validation of search-space files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from core.cli import run
from core.config import parse_overrides
from core.data.synthetic import SyntheticSpec, prepare_synthetic
from core.tune import fmt, main

REPO = Path(__file__).resolve().parent.parent
CONFIG, SPACE = "configs/distillation/sasrec.yaml", "configs/tune/synthetic_smoke.yaml"
QUICK = ("device=cpu,model.hidden_units=16,model.maxlen=12,training.batch_size=32,training.max_steps_per_epoch=3,"
         "training.threads=1,data.dataset=syn-a")
SEED = 7


def _env(home: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "RECSYS_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def _cmd(home: Path, data: Path, *extra: str, space: str = SPACE) -> list[str]:
    return [sys.executable, "-m", "core.tune", "--config", CONFIG, "--space", space, "--seed", str(SEED),
            "--override", f"{QUICK},home={home},data.data_root={data}", *extra]


def _tune(home: Path, data: Path, *extra: str, space: str = SPACE) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(home, data, *extra, space=space), cwd=REPO, env=_env(home), capture_output=True,
                          text=True, timeout=300)


def _rows(study_dir: Path) -> list[dict]:
    return json.loads((study_dir / "trials.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune_data")
    prepare_synthetic(root / "syn", SyntheticSpec(n_users=200, n_items_per_domain=60, n_clusters=3))
    return root


@pytest.fixture(scope="module")
def searched(tmp_path_factory, data):
    """An uninterrupted 3-trial search with seed SEED (the reference of the other tests)."""
    home = tmp_path_factory.mktemp("tune_home")
    proc = _tune(home, data, "--trials", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home, home / "tune" / "sasrec-synthetic_smoke", proc


def test_search_writes_table_json_and_best_yaml(searched):
    home, study_dir, proc = searched
    rows = _rows(study_dir)
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows) and rows[0]["state"] == "COMPLETE"
    assert all(0.1 <= r["params"]["model.dropout_rate"] <= 0.5 for r in rows)
    assert len({r["params"]["training.learning_rate"] for r in rows}) == 3
    for r in rows:  # each trial is an ordinary run in the usual output tree
        assert r["run_dir"] == f"distillation/syn-a/tune-sasrec-synthetic_smoke-t{r['number']:03d}"
        assert (home / r["run_dir"] / "metrics.jsonl").is_file()
    table = (study_dir / "trials.md").read_text().splitlines()
    assert table[0].startswith("| # | state | NDCG@10 | model.dropout_rate | training.learning_rate | minutes |")
    assert len(table) == 2 + 3
    best = (study_dir / "best.yaml").read_text()
    assert best.startswith(f"# python -m distillation.training --config {study_dir / 'best.yaml'}\n")
    assert "run_name: tuned" in best and (study_dir / "study.db").is_file()
    assert "best: trial" in proc.stdout and table[0] in proc.stdout


def test_best_yaml_trains_with_the_usual_command(searched):
    home, study_dir, _ = searched
    best = max((r for r in _rows(study_dir) if r["state"] == "COMPLETE"), key=lambda r: r["value"])
    proc = subprocess.run([sys.executable, "-m", "distillation.training", "--config", str(study_dir / "best.yaml")],
                          cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((home / "distillation" / "syn-a" / "tuned" / "results.json").read_text())
    # the same config and seed on CPU: the best trial again, to the digit
    assert res["valid"]["NDCG@10"] == pytest.approx(best["value"], abs=1e-6)


def test_same_seed_same_parameters_and_minutes_budget(searched, data, tmp_path):
    _, study_dir, _ = searched
    reference = [r["params"] for r in _rows(study_dir)]
    again = _tune(tmp_path, data, "--trials", "2", "--study", "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["params"] for r in _rows(tmp_path / "tune" / "again")] == reference[:2]
    # another seed samples other values; --minutes lets the first trial start and no other
    other = _tune(tmp_path, data, "--minutes", "0.02", "--study", "other", "--seed", "8")
    assert other.returncode == 0 and "time budget" in other.stdout, other.stderr[-3000:]
    rows = _rows(tmp_path / "tune" / "other")
    assert len(rows) == 1 and rows[0]["params"] != reference[0]


def _alive(needle: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes().decode(errors="replace"):
                return True
        except OSError:
            pass
    return False


def test_sigkill_of_the_tuner_then_rerun_continues_the_study(searched, data, tmp_path):
    """SIGKILL the tuner in its second trial (after that run's first last.pt); the same command
    then reruns the killed trial's parameters, continuing its run folder from last.pt, and ends
    at 3 COMPLETE/PRUNED trials with the parameters an uninterrupted search samples."""
    cmd = _cmd(tmp_path, data, "--trials", "3", "--study", "cut", "--override", "training.epochs=12")
    tuner = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = tmp_path / "distillation" / "syn-a" / "tune-cut-t001"
    deadline = time.monotonic() + 240
    while not (second / "last.pt").is_file():
        assert tuner.poll() is None and time.monotonic() < deadline, tuner.communicate()[1][-3000:]
        time.sleep(0.05)
    tuner.send_signal(signal.SIGKILL)
    tuner.communicate()
    assert not (second / "results.json").exists()
    time.sleep(0.5)
    if Path("/proc").is_dir():  # the trial died with its tuner: nothing writes into the folder to resume
        assert not _alive("tune-cut-t001")
    study = optuna.load_study(study_name="cut", storage=f"sqlite:///{tmp_path / 'tune' / 'cut' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    killed = study.trials[1].params

    rerun = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "trial 1 was interrupted" in rerun.stdout
    rows = _rows(tmp_path / "tune" / "cut")
    assert [r["state"] for r in rows][:3] == ["COMPLETE", "FAIL", "COMPLETE"] and len(rows) == 4
    assert sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows) == 3
    assert "tuner stopped" in rows[1]["error"]
    assert rows[2]["params"] == killed and rows[2]["run_dir"].endswith("tune-cut-t001")
    assert "resumed from" in (tmp_path / "tune" / "cut" / "logs" / "t002.log").read_text()
    epochs = [json.loads(x)["epoch"] for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 13))
    # a resumed search samples what the uninterrupted one did (same seed)
    assert [r["params"] for r in rows if r["state"] != "FAIL"] == [r["params"] for r in _rows(searched[1])]


@pytest.mark.parametrize("space, needle", [
    ("params:\n  model.dropout_rate: {type: gauss, low: 0.1, high: 0.5}\n", "params.model.dropout_rate.type"),
    ("params:\n  model.dropout_rate: {type: float, low: 0.6, high: 0.5}\n", "params.model.dropout_rate.low"),
    ("prune: {type: none}\nparams:\n  model.dropout_rate: {type: float, low: 0.1, high: 0.5}\n", "prune"),
    ("params:\n  run_name: {type: categorical, choices: [a, b]}\n", "params.run_name"),
    ("pruner: {type: hyperband}\nparams:\n  lr: {type: float, low: 0.1, high: 0.5}\n", "pruner.type"),
    ("params:\n  lr: {type: float, low: 0.1, high: 0.5}\nenqueue:\n  - {lr: 0.7}\n", "enqueue[0].lr"),
    ("params:\n  lr: {type: float, low: 0.1, high: 0.5}\n  d: {type: categorical, choices: [8, 16]}\n"
     "enqueue:\n  - {lr: 0.2, d: 16}\n  - {lr: 0.2}\n", "enqueue[1]"),
    ("params:\n  d: {type: categorical, choices: [8, 16]}\nenqueue:\n  - {d: '16'}\n", "enqueue[0].d"),
])
def test_bad_space_file_is_one_error_line_naming_file_and_key(space, needle, tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    with pytest.raises(SystemExit) as exc:
        run(main, ["--config", CONFIG, "--space", str(path), "--trials", "1"])
    assert exc.value.code == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {needle}"), lines
    assert not (tmp_path / "tune").exists()


def test_entry_outside_the_allowlist_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core.tune", "--config", CONFIG, "--space", SPACE, "--trials", "1",
                           "--entry", "os"], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "--entry 'os'" in lines[0], proc.stderr
    assert not (tmp_path / "tune").exists()


def test_a_key_the_pipeline_refuses_stops_the_search_after_one_trial(data, tmp_path):
    """Parameter names are checked by the pipeline's own config class, in the first trial."""
    space = tmp_path / "typo.yaml"
    space.write_text("params:\n  model.dropout_rat: {type: float, low: 0.1, high: 0.5}\n")
    proc = _tune(tmp_path, data, "--trials", "3", space=str(space))
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "dropout_rat" in lines[0], proc.stderr
    assert [r["state"] for r in _rows(tmp_path / "tune" / "sasrec-typo")] == ["FAIL"]


def test_enqueued_points_run_first_and_once(data, tmp_path):
    """The space's enqueue: list (a reference recipe) is the study's first trial, with exactly
    those values (1e-3 written the YAML 1.1 way, which reads as text); a rerun of the same command
    continues the study without running it again."""
    space = tmp_path / "ref.yaml"
    space.write_text((REPO / SPACE).read_text() + "enqueue:\n"
                     "  - {model.dropout_rate: 0.25, training.learning_rate: 1e-3}\n")
    first = _tune(tmp_path, data, "--trials", "2", space=str(space))
    assert first.returncode == 0, first.stderr[-3000:]
    rows = _rows(tmp_path / "tune" / "sasrec-ref")
    assert rows[0]["params"] == {"model.dropout_rate": 0.25, "training.learning_rate": 0.001}
    assert len(rows) == 2 and rows[1]["params"] != rows[0]["params"]
    more = _tune(tmp_path, data, "--trials", "3", space=str(space))
    assert more.returncode == 0, more.stderr[-3000:]
    rows = _rows(tmp_path / "tune" / "sasrec-ref")
    assert len(rows) == 3 and rows[0]["params"] not in [r["params"] for r in rows[1:]]


@pytest.mark.parametrize("value", [1e-05, 0.25, 3, True, None, "a,b: c", [1, 2], [], {"k": 0.5}, 1.5e20])
def test_override_values_read_back_unchanged(value):
    assert parse_overrides(f"k={fmt(value)}") == [("k", value)]


SHIPPED_SPACES = sorted((REPO / "configs" / "tune").glob("*.yaml"))


@pytest.mark.parametrize("space_path", SHIPPED_SPACES, ids=lambda p: p.name)
def test_shipped_spaces_name_only_keys_their_config_accepts(space_path):
    """core.tune leaves key names to the pipeline, so a misspelt key in a shipped space would only
    surface as a failed first trial; here every fixed key, and each parameter at its first enqueued
    point (or its low end / first choice), must load into the config the space's own command names."""
    import re

    from optuna.distributions import CategoricalDistribution

    from core.config import load_config
    from core.seqrec import SeqRecConfig
    from core.tune import _as_overrides, load_space
    from distillation.config import DistillConfig

    command = re.search(r"python -m core\.tune --config (\S+) --space (\S+)", space_path.read_text())
    assert command and command.group(2) == f"configs/tune/{space_path.name}", "the header must give its command"
    config = REPO / command.group(1)
    space = load_space(space_path)
    point = space.enqueue[0] if space.enqueue else {
        k: d.choices[0] if isinstance(d, CategoricalDistribution) else d.low for k, d in space.params.items()}
    cls = DistillConfig if config.parent.name.endswith("_llm") else SeqRecConfig
    cfg = load_config(cls, config, _as_overrides({**space.fixed, **point, "run_name": "t"}))
    for key, value in {**space.fixed, **point}.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value or (isinstance(value, list) and list(node) == value), key

"""Config and run-reporting hygiene (issue 21): repeated YAML keys, non-UTF-8 files, metric
cut-offs, "did you mean" suggestions, the time budget's last epoch, the run record in every
``results.json``, the one-line config report and optional TensorBoard events."""
from __future__ import annotations

import codecs
import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from core.config import load_config, load_yaml, parse_overrides, read_yaml, suggest_keys
from core.errors import ConfigError
from core.seqrec import SeqRecConfig
from core.train import TrainConfig, fit

REPO = Path(__file__).resolve().parent.parent
QUIET = lambda *a, **k: None  # noqa: E731


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- repeated keys
def test_repeated_top_level_section_is_refused_with_both_lines(tmp_path):
    # before: the second training: block silently replaced the first (lr, batch size, patience)
    cfg = _write(tmp_path / "c.yaml", "seed: 1\ntraining:\n  learning_rate: 0.01\n  batch_size: 64\n"
                                      "model:\n  hidden_units: 16\ntraining:\n  patience: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(SeqRecConfig, cfg)
    msg = str(exc.value)
    assert "'training'" in msg and f"{cfg}:7" in msg and f"{cfg}:2" in msg and "\n" not in msg


def test_repeated_nested_key_is_refused(tmp_path):
    cfg = _write(tmp_path / "c.yaml", "training:\n  learning_rate: 0.01\n  epochs: 3\n  learning_rate: 0.5\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cfg))}:4: key 'learning_rate' is given twice "
                                          rf"\(first at {re.escape(str(cfg))}:2\)"):
        load_config(SeqRecConfig, cfg)


def test_repeated_key_at_any_depth_and_in_lists():
    with pytest.raises(ConfigError, match=r"x.yaml:4: key 'c' is given twice \(first at x.yaml:3\)"):
        load_yaml("a:\n  b:\n    c: 1\n    c: 2\n", "x.yaml")
    with pytest.raises(ConfigError, match="key 'k' is given twice"):
        load_yaml("items:\n  - {k: 1, k: 2}\n", "y.yaml")


def test_strict_loader_stays_safe():
    # it bypasses yaml.safe_load's name, so pin what keeps it safe: SafeLoader's constructors only
    import yaml

    from core.config import StrictLoader

    assert issubclass(StrictLoader, yaml.SafeLoader)
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml("x: !!python/object/apply:os.system ['true']\n", "evil.yaml")


def test_merge_keys_may_still_be_overridden():
    # '<<: *base' then an explicit key is YAML's way to override a shared block: not a repeat
    data = load_yaml("base: &b {lr: 1, bs: 2}\nrun:\n  <<: *b\n  lr: 3\n")
    assert data["run"] == {"lr": 3, "bs": 2}


def test_two_spellings_of_one_key_in_a_file_are_refused(tmp_path):
    # lr is the seeds' alias of training.learning_rate: the later one used to win silently
    cfg = _write(tmp_path / "c.yaml", "training:\n  learning_rate: 0.01\nlr: 0.5\n")
    with pytest.raises(ConfigError, match=r"'lr' and 'training.learning_rate' both set training.learning_rate"):
        load_config(SeqRecConfig, cfg)
    # an override on top of a file is no repeat: overrides are there to win
    cfg2 = _write(tmp_path / "d.yaml", "training:\n  learning_rate: 0.01\n")
    assert load_config(SeqRecConfig, cfg2, "lr=0.5").training.learning_rate == 0.5


def test_repeated_key_inside_an_override_value():
    with pytest.raises(ConfigError, match=r"--override x: key 'a' is given twice"):
        parse_overrides("x={a: 1, a: 2}")
    assert parse_overrides("x={a: 1, b: 2}") == [("x", {"a": 1, "b": 2})]


def test_tune_space_file_uses_the_strict_loader(tmp_path):
    from core.tune import load_space

    space = _write(tmp_path / "space.yaml", "metric: NDCG@10\nparams:\n  training.learning_rate: {type: float, "
                                            "low: 0.001, high: 0.01}\nmetric: HR@10\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(space))}:4: key 'metric' is given twice"):
        load_space(space)


# --------------------------------------------------------------------------- encodings
def test_non_utf8_config_names_the_byte_and_the_fix(tmp_path):
    # before: a UnicodeDecodeError traceback
    cfg = _write(tmp_path / "c.yaml", "seed: 1\nrun_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config(SeqRecConfig, cfg)
    msg = str(exc.value)
    assert msg.startswith(f"{cfg}: not UTF-8") and "byte 0xe9 at byte offset 21 (line 2)" in msg
    assert "save the file as UTF-8" in msg


def test_utf16_config_is_named_as_such(tmp_path):
    cfg = _write(tmp_path / "c.yaml", "seed: 1\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(it looks like UTF-16\).*byte offset 0"):
        read_yaml(cfg)


def test_utf8_bom_is_accepted(tmp_path):
    cfg = _write(tmp_path / "c.yaml", codecs.BOM_UTF8 + b"seed: 5\ntraining:\n  epochs: 2\n")
    loaded = load_config(SeqRecConfig, cfg)
    assert loaded.seed == 5 and loaded.training.epochs == 2


def test_non_utf8_tune_space(tmp_path):
    from core.tune import load_space

    space = _write(tmp_path / "space.yaml", b"metric: NDCG@10\n# \xff\n")
    with pytest.raises(ConfigError, match="byte offset 18 .*save the file as UTF-8"):
        load_space(space)


def test_bad_config_through_an_entry_point_is_one_line_and_exit_2(tmp_path, capsys):
    from core.cli import run
    from user_representation_module.train import main

    cfg = _write(tmp_path / "c.yaml", "training:\n  epochs: 1\ntraining:\n  epochs: 2\n")
    with pytest.raises(SystemExit) as exc:
        run(main, ["--config", str(cfg)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "key 'training' is given twice" in err[0]


# --------------------------------------------------------------------------- cut-offs
def _schemas():
    from cross_domain.config import CrossDomainConfig
    from persona_training.config import RerankSection
    from recommendation_model.config import RecConfig
    from universal.config import UniversalConfig
    from user_representation_module.config import RepConfig

    return [(SeqRecConfig, "eval.ks"), (UniversalConfig, "eval.ks"), (RerankSection, "ks"), (RepConfig, "eval.ks"),
            (RecConfig, "eval.ks"), (CrossDomainConfig, "eval.ks")]


@pytest.mark.parametrize("value, problem", [("[]", "no cut-offs given"), ("[0]", "cut-off 0 is not a positive integer"),
                                            ("[5, -1]", "cut-off -1 is not a positive integer"),
                                            ("[10, 5, 10]", "cut-off 10 is listed twice")])
def test_bad_cutoffs_fail_at_load_in_every_schema(value, problem):
    # before: ks=[] or [0] passed the load and failed with a traceback after a full epoch
    for cls, key in _schemas():
        with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}': {problem}") as exc:
            load_config(cls, None, f"{key}={value}")
        assert "e.g." in str(exc.value) or "once" in str(exc.value)


def test_good_cutoffs_still_load():
    for cls, key in _schemas():
        cfg = load_config(cls, None, f"{key}=[1, 10, 50]")
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert list(node) == [1, 10, 50]


def test_training_metric_needs_its_k_among_the_cutoffs():
    with pytest.raises(ConfigError, match=r"training.metric 'NDCG@10' needs K=10 in eval.ks \[5, 20\]"):
        load_config(SeqRecConfig, None, "eval.ks=[5,20]")
    assert load_config(SeqRecConfig, None, "eval.ks=[5,20],training.metric=NDCG@20").training.metric == "NDCG@20"


def test_every_shipped_config_passes_the_new_checks():
    from cross_domain.config import CrossDomainConfig
    from distillation.config import DistillConfig
    from persona_training.config import DataSection, RerankSection, TrainSection
    from recommendation_model.config import RecConfig
    from universal.config import UniversalConfig
    from user_representation_module.config import RepConfig

    demo = {"cross_domain": CrossDomainConfig, "persona_data": DataSection, "persona_rerank": RerankSection,
            "persona_train": TrainSection, "sasrec": SeqRecConfig, "sequential": DistillConfig,
            "trigrec_rec": RecConfig, "trigrec_rep": RepConfig, "universal": UniversalConfig}
    by_folder = {"cross_domain": CrossDomainConfig, "distillation": DistillConfig, "universal": UniversalConfig}
    files = sorted((REPO / "configs").rglob("*.yaml"))
    loaded = 0
    for path in files:
        read_yaml(path)  # every file: no repeated key, UTF-8
        parts = path.relative_to(REPO / "configs").parts
        cls = by_folder.get(parts[0])
        if parts[0] == "trigrec":
            from recommendation_model.merged import MergedConfig

            cls = {"rec": RecConfig, "rep": RepConfig, "merged": MergedConfig}[parts[1]]
        elif parts[:2] == ("distillation", "profiles"):
            from distillation.profiles import ProfilesConfig

            cls = ProfilesConfig
        elif parts[0] == "persona_training":
            cls = {"data": DataSection, "train": TrainSection, "rerank": RerankSection}.get(path.stem)
        elif parts[0] == "demo":
            cls = demo.get(path.stem)  # demo/distillation.yaml needs profiles made during the demo
        if cls is not None:
            load_config(cls, path)
            loaded += 1
    assert len(files) > 40 and loaded > 40


# --------------------------------------------------------------------------- suggestions
@dataclass(frozen=True)
class _Stage1Like:
    seed: int = 0
    device: str = "auto"
    training: TrainConfig = field(default_factory=TrainConfig)


def test_no_far_fetched_suggestion_for_an_unknown_key():
    # before: 'run_name' -> "did you mean training.amp?", 'run_nme' -> "did you mean resume?"
    for key in ("run_name", "run_nme"):
        with pytest.raises(ConfigError) as exc:
            load_config(_Stage1Like, None, f"{key}=x")
        msg = str(exc.value)
        assert "did you mean" not in msg and "valid keys:" in msg and "training.learning_rate" in msg
    from user_representation_module.config import RepConfig

    with pytest.raises(ConfigError) as exc:
        load_config(RepConfig, None, "run_nme=x")
    assert "training.amp" not in str(exc.value) and "resume" not in str(exc.value).split("valid keys")[0]


@pytest.mark.parametrize("typo, first", [("eval.k", "eval.ks"), ("training.epoch", "training.epochs"),
                                         ("model.learning_rate", "training.learning_rate"),
                                         ("lerning_rate", "training.learning_rate"), ("devce", "device"),
                                         ("model.max_len", "model.maxlen")])
def test_close_typos_still_get_the_right_suggestion_first(typo, first):
    with pytest.raises(ConfigError, match=rf"did you mean {re.escape(first)}[,?]"):
        load_config(SeqRecConfig, None, f"{typo}=1")


def test_suggest_keys_returns_nothing_rather_than_a_far_key():
    assert suggest_keys("run_name", ["training.amp", "training.resume", "seed"]) == []
    assert suggest_keys("trainng.amp", ["training.amp", "seed"]) == ["training.amp"]


# --------------------------------------------------------------------------- the fit loop
class _Toy(nn.Module):
    kind = "toy"
    model_args: dict = {}

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(4, 1)

    def training_loss(self, batch, generator=None):
        return ((self.w(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


class _Rows:
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1)

    def __len__(self) -> int:
        return len(self.x)

    def get_batch(self, index, generator=None):
        return {"x": self.x[index], "y": self.y[index]}


def _fit(out: Path, lines: list | None = None, **train) -> tuple:
    torch.manual_seed(0)
    model = _Toy()
    calls = []

    def validate(m):
        calls.append(1)
        with torch.no_grad():
            return {"NDCG@10": float(-m.training_loss({"x": _Rows().x, "y": _Rows().y}))}

    cfg = TrainConfig(**{"epochs": 10, "batch_size": 16, "patience": 0, **train})
    res = fit(model, _Rows(), validate, cfg, out, device=torch.device("cpu"), seed=0,
              checkpoint_meta={"kind": "toy", "model_args": {}, "config": {"training": dataclasses.asdict(cfg)}},
              log=(lines.append if lines is not None else QUIET))
    return res, calls


def test_time_budget_validates_the_epoch_it_stops_on(tmp_path):
    # before: with eval_every=5 a budget hit after epoch 1 stopped with no validation at all
    # (best_epoch -1, no best.pt: test metrics came from weights nobody had judged)
    res, calls = _fit(tmp_path / "run", eval_every=5, time_budget_s=1e-9)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert res.epochs_run == 1 and res.stopped.startswith("time budget") and len(calls) == 1
    assert res.best_epoch == 1 and "valid" in rows[-1] and (tmp_path / "run" / "best.pt").is_file()


def test_without_a_budget_eval_every_is_kept(tmp_path):
    res, calls = _fit(tmp_path / "run", epochs=6, eval_every=3)
    assert res.epochs_run == 6 and len(calls) == 2 and res.started > 0 and res.ended >= res.started


def test_unknown_validation_metric_is_one_line(tmp_path):
    # before: KeyError traceback after the first epoch
    with pytest.raises(ConfigError, match=r"training.metric 'ndcg@10' is not computed .*use one of NDCG@10"):
        _fit(tmp_path / "run", epochs=1, metric="ndcg@10")


def test_resolved_config_is_one_line_with_the_path(tmp_path, monkeypatch):
    import core.cli

    lines: list[str] = []
    _fit(tmp_path / "run", lines, epochs=1)
    said = [x for x in lines if "config" in x]
    assert said == [f"resolved config: {tmp_path / 'run' / 'config.yaml'} (--verbose prints it)"]
    monkeypatch.setattr(core.cli, "_VERBOSE", [True])
    lines.clear()
    _fit(tmp_path / "run2", lines, epochs=1)
    said = [x for x in lines if x.startswith("resolved config")]
    assert len(said) == 1 and "learning_rate: 0.001" in said[0]  # the whole text, under --verbose


def test_verbose_flag_is_common_to_entry_points():
    import argparse

    from core.cli import add_common_args, is_verbose

    parser = argparse.ArgumentParser()
    add_common_args(parser)
    assert parser.parse_args([]).verbose is False and not is_verbose()
    assert parser.parse_args(["--verbose"]).verbose is True and is_verbose()
    add_common_args(argparse.ArgumentParser())  # the next command line starts quiet again
    assert not is_verbose()


def test_tensorboard_events_when_on(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit(tmp_path / "run", epochs=3, eval_every=1, tensorboard=True)
    events = list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/train_loss" in tags and "valid/NDCG@10" in tags
    assert [e.step for e in acc.Scalars("valid/NDCG@10")] == [1, 2, 3]
    _fit(tmp_path / "run", epochs=1)  # a fresh run in the folder drops the old events
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_tensorboard_is_imported_only_when_on(tmp_path, monkeypatch):
    # None in sys.modules makes any import of it fail: with the key off, fit must not try
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    _fit(tmp_path / "off", epochs=1)
    with pytest.raises(ConfigError, match="training.tensorboard=true needs the tensorboard package"):
        _fit(tmp_path / "on", epochs=1, tensorboard=True)


# --------------------------------------------------------------------------- the run record
def test_run_record_fields(tmp_path):
    from core.provenance import run_record

    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "a.txt", "1 2 3\n")
    rec = run_record(SeqRecConfig(), device=torch.device("cpu"), threads=2, started=1_700_000_000.0,
                     data_paths=[tmp_path / "d"], data_fingerprint="abc")
    assert rec["config"]["seed"] == rec["seed"] == 42 and rec["config"]["training"]["epochs"] == 50
    assert re.fullmatch(r"[0-9a-f]{40}", rec["git"]["commit"]) and isinstance(rec["git"]["dirty"], bool)
    assert rec["torch"] == torch.__version__ and rec["python"].count(".") == 2 and rec["numpy"]
    assert rec["device"] == "cpu" and rec["threads"] == 2 and rec["host"]
    # the CPU a time figure came from, with the ISA torch dispatches to (AVX2 and AVX512 differ 1.7x)
    assert rec["cpu"].endswith(", " + torch.backends.cpu.get_cpu_capability())
    assert rec["started"] == "2023-11-14T22:13:20+00:00" and rec["ended"] > rec["started"]
    assert rec["data"]["files"] == 1 and rec["data"]["loaded_fingerprint"] == "abc" and not rec["data"]["quick"]
    json.dumps(rec)  # plain JSON data


def test_data_fingerprint_follows_content_and_is_quick_on_big_files(tmp_path, monkeypatch):
    import core.provenance as prov

    f = _write(tmp_path / "a.bin", b"x" * 1000)
    one = prov.fingerprint_files([f])
    _write(f, b"y" * 1000)
    two = prov.fingerprint_files([f])
    assert one["sha256"] != two["sha256"] and one["bytes"] == 1000
    monkeypatch.setattr(prov, "HASH_FILE_LIMIT", 100)
    assert prov.fingerprint_files([f])["quick"] is True
    assert prov.fingerprint_files([tmp_path / "gone"])["missing"] == ["gone"]


def test_run_record_without_git(monkeypatch):
    import subprocess

    import core.provenance as prov

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    prov.git_state.cache_clear()
    try:
        assert prov.run_record({"seed": 3})["git"] == {"commit": None, "dirty": None}
    finally:
        prov.git_state.cache_clear()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import write_synthetic_tree

    return write_synthetic_tree(tmp_path_factory.mktemp("hyg_data"), 80, universal=(30, 20, 6))


def _check_run(results_path: Path, seed: int) -> None:
    run = json.loads(results_path.read_text())["run"]
    assert run["seed"] == seed and run["config"]["seed"] == seed and run["device"] == "cpu"
    assert run["git"]["commit"] and run["started"] and run["ended"] >= run["started"]
    assert run["data"]["files"] >= 1 and run["data"]["loaded_fingerprint"]


def test_results_json_carries_the_run_record(tiny, tmp_path):
    from core.seqrec import train_and_evaluate
    from cross_domain.config import CrossDomainConfig
    from cross_domain.rl import rl_demo
    from cross_domain.transfer import train_source, train_target
    from universal.config import UniversalConfig
    from universal.pipeline import Pipeline
    from user_representation_module.config import RepConfig
    from user_representation_module.train import train_representations

    small = "device=cpu,seed=3,hidden_units=16,maxlen=12"
    res = train_and_evaluate(load_config(SeqRecConfig, overrides=(
        f"{small},home={tmp_path / 's'},data.data_root={tiny},data.dataset=syn-a,training.batch_size=16,"
        "training.epochs=1,eval.sampled=[]")), log=QUIET)
    _check_run(Path(res["run_dir"]) / "results.json", 3)
    res = train_representations(load_config(RepConfig, REPO / "configs/trigrec/rep/synthetic.yaml", (
        f"{small},home={tmp_path / 't'},data.data_root={tiny},data.dataset=syn,num_epochs=1,max_steps_per_epoch=2,"
        "eval.valid_max_users=50")), log=QUIET)
    _check_run(Path(res["rep_dir"]) / "results.json", 3)
    cd = load_config(CrossDomainConfig, REPO / "configs/cross_domain/synthetic.yaml", (
        f"{small},home={tmp_path / 'c'},data.data_root={tiny},data.dataset=syn,num_epochs=1,rl.steps=1,"
        "rl.max_users=20,rl.candidates=9"))
    res = train_source(cd, log=QUIET)
    _check_run(Path(res["run_dir"]) / "results.json", 3)
    res = train_target(cd, "baseline", log=QUIET)
    _check_run(Path(res["run_dir"]) / "results.json", 3)
    rl_demo(cd, log=QUIET)
    _check_run(next((tmp_path / "c").rglob("rl-*/results.json")), 3)
    cfg = load_config(UniversalConfig, REPO / "configs/universal/synthetic.yaml",
                      f"device=cpu,seed=3,home={tmp_path / 'u'},embedding_dim=16,batch_size=16,num_epochs=1")
    res = Pipeline(cfg, log=QUIET).fit(tiny / "uni.json")
    _check_run(Path(res["run_dir"]) / "results.json", 3)

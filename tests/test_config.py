"""core.config: override parsing, typed strict loading, aliases, errors, round trips."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest
import yaml

from core.config import dump_yaml, from_dict, load_config, parse_overrides, replace, save_config, to_dict
from core.errors import ConfigError


# --------------------------------------------------------------------------- a small test schema
@dataclass(frozen=True)
class TrainSection:
    lr: float = 0.01
    epochs: int = 10
    amp: bool = True
    ks: list[int] = field(default_factory=lambda: [5, 10])
    scheduler: Literal["constant", "cosine"] = "constant"
    batch_size: int = 32


@dataclass(frozen=True)
class ModelSection:
    hidden_units: int = 64
    checkpoint: str | None = None
    batch_size: int = 128  # same leaf name as train.batch_size: ambiguous as a bare key


@dataclass(frozen=True)
class Schema:
    ALIASES: ClassVar[dict] = {
        "EPOCH_TO_LOAD": "train.epochs",
        "embedding_dim": "model.hidden_units",
    }
    name: str = "default"
    seed: int = 0
    train: TrainSection = field(default_factory=TrainSection)
    model: ModelSection = field(default_factory=ModelSection)


def write_yaml(tmp_path, text: str, name: str = "cfg.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- parse_overrides
def test_parse_overrides_basic_and_nested():
    assert parse_overrides("a=1,b.c=x") == [("a", 1), ("b.c", "x")]
    assert parse_overrides("train.lr=0.5, model.hidden_units = 8") == [("train.lr", 0.5), ("model.hidden_units", 8)]


def test_parse_overrides_list_with_commas_in_brackets():
    assert parse_overrides("ks=[5,10,20],seed=3") == [("ks", [5, 10, 20]), ("seed", 3)]
    assert parse_overrides("m={a: 1, b: 2},x=y") == [("m", {"a": 1, "b": 2}), ("x", "y")]


def test_parse_overrides_quoted_strings_keep_commas():
    assert parse_overrides('name="a,b",x=1') == [("name", "a,b"), ("x", 1)]
    assert parse_overrides("name='c,d,e'") == [("name", "c,d,e")]


def test_parse_overrides_empty_entries_and_empty_text():
    assert parse_overrides("") == []
    assert parse_overrides("   ") == []
    assert parse_overrides("a=1,,b=2,") == [("a", 1), ("b", 2)]
    # an empty value is None; YAML types come through
    assert parse_overrides("e=,t=true,f=1.5") == [("e", None), ("t", True), ("f", 1.5)]


def test_parse_overrides_value_may_contain_equals():
    assert parse_overrides("expr=a=b") == [("expr", "a=b")]


@pytest.mark.parametrize("text", ["a=1,b", "justakey", "a=1, =2"])
def test_parse_overrides_missing_equals_or_key(text):
    with pytest.raises(ConfigError):
        parse_overrides(text)


@pytest.mark.parametrize("text", ["ks=[5,10", "ks=5]", "name=\"abc", "m={a: 1"])
def test_parse_overrides_unbalanced(text):
    with pytest.raises(ConfigError, match="unbalanced"):
        parse_overrides(text)


# --------------------------------------------------------------------------- load_config
def test_defaults_only():
    cfg = load_config(Schema)
    assert cfg == Schema()
    assert cfg.train.lr == 0.01 and cfg.train.ks == [5, 10] and cfg.model.checkpoint is None


def test_precedence_defaults_yaml_override(tmp_path):
    p = write_yaml(tmp_path, "seed: 7\nname: fromyaml\ntrain:\n  lr: 0.5\n  epochs: 3\n")
    cfg = load_config(Schema, p, overrides="train.lr=0.25")
    assert cfg.seed == 7  # YAML over default
    assert cfg.name == "fromyaml"
    assert cfg.train.epochs == 3
    assert cfg.train.lr == 0.25  # override over YAML
    assert cfg.train.batch_size == 32  # untouched default
    assert cfg.model.hidden_units == 64


def test_later_override_wins():
    cfg = load_config(Schema, overrides="seed=1,seed=2")
    assert cfg.seed == 2


def test_unique_leaf_name_resolution(tmp_path):
    cfg = load_config(Schema, overrides="lr=0.125,epochs=4,hidden_units=16")
    assert cfg.train.lr == 0.125
    assert cfg.train.epochs == 4
    assert cfg.model.hidden_units == 16
    # a leaf name also works as a top-level YAML key
    p = write_yaml(tmp_path, "lr: 0.75\n")
    assert load_config(Schema, p).train.lr == 0.75


def test_ambiguous_leaf_name_is_an_error():
    with pytest.raises(ConfigError, match="ambiguous") as exc:
        load_config(Schema, overrides="batch_size=4")
    assert "model.batch_size" in str(exc.value) and "train.batch_size" in str(exc.value)
    # the dotted path resolves it
    assert load_config(Schema, overrides="model.batch_size=4").model.batch_size == 4


def test_aliases(tmp_path):
    cfg = load_config(Schema, overrides="EPOCH_TO_LOAD=12,embedding_dim=24")
    assert cfg.train.epochs == 12
    assert cfg.model.hidden_units == 24
    p = write_yaml(tmp_path, "EPOCH_TO_LOAD: 9\nmodel:\n  embedding_dim: 40\n")
    cfg = load_config(Schema, p)
    assert cfg.train.epochs == 9
    assert cfg.model.hidden_units == 40


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as exc:
        load_config(Schema, overrides="train.lrr=0.1")
    assert "train.lr" in str(exc.value)
    assert "train.lrr" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(Schema, overrides="hiden_units=3")
    assert "hidden_units" in str(exc.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = write_yaml(tmp_path, "train:\n  epohcs: 3\n", name="mine.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config(Schema, p)
    msg = str(exc.value)
    assert "mine.yaml" in msg and "train.epochs" in msg


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.amp=3", "train.amp"),
        ("train.scheduler=linear", "train.scheduler"),
        ("train.ks=[5,x]", "train.ks"),
        ("train.lr=fast", "train.lr"),
        ("seed=1.5", "seed"),
        ("train.amp=yes please", "train.amp"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config(Schema, overrides=override)
    assert key in str(exc.value)


def test_wrong_type_in_yaml(tmp_path):
    p = write_yaml(tmp_path, "train:\n  epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(Schema, p)


def test_coercions():
    cfg = load_config(Schema, overrides="train.lr=1e-3,train.epochs=5.0,name=123,train.ks=7,model.checkpoint=best.pt")
    assert cfg.train.lr == pytest.approx(0.001) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.name == "123"
    assert cfg.train.ks == [7]  # a scalar for a list field becomes a one-element list
    assert cfg.model.checkpoint == "best.pt"
    cfg = load_config(Schema, overrides="train.lr=3,train.scheduler=cosine,train.amp=false,model.checkpoint=")
    assert cfg.train.lr == 3.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.scheduler == "cosine"
    assert cfg.train.amp is False
    assert cfg.model.checkpoint is None


def test_float_from_yaml_string_1e_3(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; the float field still accepts it
    p = write_yaml(tmp_path, "train:\n  lr: 1e-3\n")
    assert yaml.safe_load(p.read_text())["train"]["lr"] == "1e-3"
    assert load_config(Schema, p).train.lr == pytest.approx(1e-3)


def test_invalid_yaml_names_file(tmp_path):
    p = write_yaml(tmp_path, "train:\n  lr: [1, 2\n  epochs: 3\n", name="broken.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config(Schema, p)
    assert "broken.yaml" in str(exc.value)
    assert "invalid YAML" in str(exc.value)


def test_section_given_a_scalar_is_an_error(tmp_path):
    p = write_yaml(tmp_path, "train: 5\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Schema, p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found") as exc:
        load_config(Schema, tmp_path / "nope.yaml")
    assert "nope.yaml" in str(exc.value)


def test_empty_yaml_gives_defaults(tmp_path):
    p = write_yaml(tmp_path, "")
    assert load_config(Schema, p) == Schema()


def test_config_is_frozen():
    cfg = load_config(Schema)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0


def test_to_dict_from_dict_round_trip():
    cfg = load_config(Schema, overrides="seed=5,train.ks=[1,2,3],model.checkpoint=x.pt,train.amp=false,lr=0.3")
    d = to_dict(cfg)
    assert d == {
        "name": "default",
        "seed": 5,
        "train": {"lr": 0.3, "epochs": 10, "amp": False, "ks": [1, 2, 3], "scheduler": "constant", "batch_size": 32},
        "model": {"hidden_units": 64, "checkpoint": "x.pt", "batch_size": 128},
    }
    back = from_dict(Schema, d)
    assert back == cfg
    assert "ALIASES" not in d


def test_save_config_loads_back_equal(tmp_path):
    cfg = load_config(Schema, overrides="name=run1,train.lr=1e-4,train.ks=[20],model.checkpoint=null,train.scheduler=cosine")
    out = tmp_path / "sub" / "config.yaml"
    save_config(cfg, out)
    assert out.is_file()
    assert yaml.safe_load(out.read_text())["train"]["lr"] == pytest.approx(1e-4)
    assert load_config(Schema, out) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp files left
    assert yaml.safe_load(dump_yaml(cfg)) == to_dict(cfg)


def test_replace_by_dotted_and_leaf_key():
    cfg = load_config(Schema)
    new = replace(cfg, **{"train.lr": 0.5, "hidden_units": 8})
    assert new.train.lr == 0.5 and new.model.hidden_units == 8
    assert cfg.train.lr == 0.01  # original untouched


# --------------------------------------------------------------------------- the real schema
def test_seqrec_config_accepts_seed_keys(tmp_path):
    from core.seqrec import SeqRecConfig

    p = write_yaml(
        tmp_path,
        "hidden_units: 32\nnum_blocks: 3\nnum_heads: 4\ndropout_rate: 0.1\nmaxlen: 20\n"
        "initializer_range: 0.05\nmodel_type: sasrec\n",
    )
    cfg = load_config(SeqRecConfig, p)
    m = cfg.model
    assert (m.hidden_units, m.num_blocks, m.num_heads, m.dropout_rate, m.maxlen, m.initializer_range, m.model_type) == (
        32, 3, 4, 0.1, 20, 0.05, "sasrec")
    cfg = load_config(SeqRecConfig, p, overrides="embedding_dim=48,num_layers=1")
    assert cfg.model.hidden_units == 48
    assert cfg.model.num_blocks == 1
    assert cfg.model.num_heads == 4  # from the YAML


def test_seqrec_config_validation_is_config_error():
    from core.seqrec import SeqRecConfig

    with pytest.raises(ConfigError, match="divisible"):
        load_config(SeqRecConfig, overrides="hidden_units=30,num_heads=4")

"""Config of the cross-domain pipeline: YAML sections + the seed's flat names.

``--max_items`` (train-source) and ``--max_items_src`` are the source domain's cap,
``--max_items_tgt`` the target's (``data.max_items_src`` / ``data.max_items_tgt``);
``cold_k`` / ``cold_fraction`` are the cold-start protocol, ``bridge`` picks the transfer
bridge. An unknown key is an error naming the closest valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from core import store
from core.errors import ConfigError
from core.seqrec import TRAINING_ALIASES, EvalConfig, ModelConfig
from core.train import TrainConfig


@dataclass(frozen=True)
class CDDataConfig:
    dataset: str = "synthetic"  # prepared two-domain folder under data_root (or a path): synthetic | food-kitchen | amazon2023-...
    data_root: str = ""  # default <repo>/data
    source: str = ""  # source domain: its name in the data (e.g. kitchen) or A/B; "" = the other domain
    target: str = "A"  # target domain: its name (e.g. food) or A/B
    max_items_src: int = 0  # the seed's cap: a random sample of at most this many source interactions (0 = all)
    max_items_tgt: int = 0  # the same for the target domain
    sample_seed: int = 42  # seed of those samples

    def __post_init__(self) -> None:
        if self.max_items_src < 0 or self.max_items_tgt < 0:
            raise ConfigError("max_items / max_items_src / max_items_tgt must be >= 0 (0 = all interactions)")

    def folder(self) -> Path:
        return store.dataset_folder(self.dataset, self.data_root)


@dataclass(frozen=True)
class CDModelConfig(ModelConfig):
    """The SASRec of every stage (source, target baseline, target transfer)."""

    dropout_rate: float = 0.3
    loss: Literal["ce", "sampled_softmax", "bce"] = "bce"
    bce_negatives: int = 4  # the seed's loss: BCE on 1 positive + this many sampled negatives per position

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_type != "sasrec":
            raise ConfigError(f"model.model_type {self.model_type!r}: the cross-domain models are SASRec")
        if self.repeat_padding != "off" or self.train_samples != "sequences":
            raise ConfigError("model.repeat_padding / train_samples: the cross-domain stages build their own "
                              "sequence rows and take neither; remove them (keep off / sequences)")
        if self.bce_negatives < 1:
            raise ConfigError("model.bce_negatives must be >= 1")


@dataclass(frozen=True)
class TransferConfig:
    bridge: Literal["mlp", "ptupcdr"] = "mlp"  # mlp: one bridge for all users; ptupcdr: per-user bridge from a meta network
    bridge_hidden: int = 128  # hidden width of the MLP bridge
    meta_hidden: int = 64  # hidden width of the PTUPCDR meta network and its attention
    source_history: int = 20  # PTUPCDR: the last N source items characterise a user
    source_vectors: str = ""  # .npy (+ .ids.json) of user vectors; "" = the train-source export of this run
    # what train-source exports per user: item_mean = mean of the source model's item vectors over
    # the user's source items (a taste summary); last = the last hidden state (the seed's)
    source_vector: Literal["item_mean", "last"] = "item_mean"
    source_dropout: float = 0.0  # share of training users whose source vector is hidden in a batch
    gate_bias: float = 0.0  # initial gate bias (> 0 starts the model closer to sequence-only)
    fuse_max_known: int = -1  # fuse only where at most this many target items are known; -1 = everywhere

    def __post_init__(self) -> None:
        if self.bridge_hidden < 1 or self.meta_hidden < 1 or self.source_history < 1:
            raise ConfigError("transfer.bridge_hidden, meta_hidden and source_history must be >= 1")
        if not 0 <= self.source_dropout < 1:
            raise ConfigError("transfer.source_dropout must be in [0, 1)")


@dataclass(frozen=True)
class ColdConfig:
    k: int = 2  # a cold user has at most k target items before each held-out one
    fraction: float = 0.3  # share of the other evaluated users whose history is cut to 0..k items
    seed: int = 0  # which users are cut, and to how many items

    def __post_init__(self) -> None:
        if self.k < 0 or not 0 <= self.fraction <= 1:
            raise ConfigError("cold.k must be >= 0 and cold.fraction in [0, 1]")


@dataclass(frozen=True)
class RLConfig:
    steps: int = 5  # passes over the events; each prints its average reward
    events: str = ""  # JSONL of logged events {"user", "item", "click"}; "" = simulate from held-out items
    use_transfer: bool = False  # fine-tune the transfer model instead of the baseline
    learning_rate: float = 5e-5
    batch_size: int = 256
    candidates: int = 99  # sampled items shown beside the held-out (or logged) one
    temperature: float = 1.0
    entropy_coeff: float = 0.01
    baseline_momentum: float = 0.9  # moving-average reward baseline
    click_reward: float = 0.3  # a click; a skip is 0
    max_users: int = 0  # 0 = simulate for every user with a held-out item

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.candidates < 1 or self.temperature <= 0:
            raise ConfigError("rl.steps, batch_size and candidates must be >= 1 and rl.temperature > 0")


@dataclass(frozen=True)
class CrossDomainConfig:
    ALIASES: ClassVar[dict] = {**TRAINING_ALIASES, "max_items": "data.max_items_src", "cold_k": "cold.k",
                               "cold_fraction": "cold.fraction", "experiment_name": "run_name"}
    seed: int = 42
    device: str = "auto"
    home: str = ""  # root of the state_dict tree; default $RECSYS_HOME or <repo>/state_dict
    run_name: str = "default"  # state_dict/cross_domain/<dataset>/<run_name>/<stage>/ (stages name their model)
    overwrite: bool = False  # replace an earlier run with another config in a stage folder (else an error)
    data: CDDataConfig = field(default_factory=CDDataConfig)
    model: CDModelConfig = field(default_factory=CDModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    cold: ColdConfig = field(default_factory=ColdConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, batch_size=256, patience=5))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(ks=[5, 10, 20], sampled=[99]))
    rl: RLConfig = field(default_factory=RLConfig)


def load_file(path: str | Path, over: str = "") -> CrossDomainConfig:
    """The config in the YAML file ``path`` with the ``--override`` string ``over``."""
    from core.config import load_config

    return load_config(CrossDomainConfig, str(path), over)

"""Stage-1 config (TriGRec user representations): YAML sections + the seed's flat key names.

The seed overrides flat keys (``device``, ``lr``, ``batch_size``, ``num_epochs``, ``seed``,
``EPOCH_TO_LOAD``, ``SPE_DOMAIN``); they are aliases of the sectioned fields here, so
``--override "lr=0.0005,EPOCH_TO_LOAD=80"`` and ``--override "training.learning_rate=0.0005"``
mean the same. An unknown key is an error that names the closest valid ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core import store
from core.data.domains import BERT4RecModelConfig as RepModelConfig, DomainDataConfig, check_target
from core.errors import ConfigError
from core.seqrec import TRAINING_ALIASES, EvalConfig
from core.train import TrainConfig

PARTS = ("spe_A", "spe_B", "common", "cross")  # the encoders; plus "discriminator"


@dataclass(frozen=True)
class RepLossConfig:
    w_spe: float = 1.0  # weight of L_spe (both domain-specific encoders)
    w_com: float = 1.0  # weight of L_com (common encoder + adversarial term)
    w_cross: float = 1.0  # weight of L_cross
    adv_weight: float = 0.5  # strength of the reversed discriminator gradient reaching the common encoder
    grl_lambda: float = 1.0  # gradient reversal factor (multiplies adv_weight)
    grl_ramp: bool = True  # DANN schedule: the reversal strength rises from 0 to full over training
    use_grl: bool = True  # False: the discriminator trains but its gradient never reaches the common encoder
    disc_hidden: int = 64
    disc_lr_scale: float = 10.0  # the discriminator's learning rate, relative to the encoders'


@dataclass(frozen=True)
class ExportConfig:
    epoch: int = 0  # EPOCH_TO_LOAD: which saved epoch to export; 0 = the latest saved
    spe_domain: str = ""  # SPE_DOMAIN: A or B, whose specific encoder is exported; "" = the target
    out_dir: str = ""  # default <home>/embeddings/user_representation_module/<domain>/
    batch_size: int = 1024
    # > 0: also write training-time vectors (``<name>.holdout{m}.npy``) encoded from sequences cut
    # before the last m target items of each user's stage-2 training part, for
    # ``model.vector_holdout=m`` (stage 2 then never reads a training target out of the vectors)
    holdout_last: int = 0

    def __post_init__(self) -> None:
        if self.spe_domain:
            object.__setattr__(self, "spe_domain", check_target(self.spe_domain, "SPE_DOMAIN"))
        if self.epoch < 0:
            raise ConfigError(f"EPOCH_TO_LOAD={self.epoch}: use a saved epoch number, or 0 for the latest")
        if self.holdout_last < 0:
            raise ConfigError(f"export.holdout_last={self.holdout_last}: use 0 (off) or the number of last target "
                              "training items to hold out of the vectors, e.g. 1")


@dataclass(frozen=True)
class RepConfig:
    ALIASES: ClassVar[dict] = {**TRAINING_ALIASES, "EPOCH_TO_LOAD": "export.epoch", "SPE_DOMAIN": "export.spe_domain",
                               "save_interval": "save_every"}
    seed: int = 42
    device: str = "auto"
    home: str = ""  # root of the state_dict tree; default $RECSYS_HOME or <repo>/state_dict
    # "" = the seed's layout state_dict/rep/<domain>/; else a sub-folder <domain>/<run_name>/ (exports likewise)
    run_name: str = ""
    overwrite: bool = False  # replace an earlier run with another config in that folder (else an error)
    save_every: int = 10  # write <part>_ep{E}.pt every this many epochs (and at the last epoch)
    data: DomainDataConfig = field(default_factory=DomainDataConfig)
    model: RepModelConfig = field(default_factory=RepModelConfig)
    loss: RepLossConfig = field(default_factory=RepLossConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=40, batch_size=256, eval_every=5,
                                                                     patience=0))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(sampled=[]))
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if self.save_every < 1:
            raise ConfigError("save_every must be >= 1")
        if self.model.prefix_prob or self.model.end_mask_prob:
            raise ConfigError("model.prefix_prob / end_mask_prob: stage 1's three-view rows (TriViewCloze) do not take "
                              "them; set them to 0 (stage 2, recommendation_model, takes both)")


def rep_dir(cfg: RepConfig, domain: str) -> Path:
    out = store.state_root(cfg.home or None) / "rep" / store.check_name(domain, "domain")
    return out / store.check_name(cfg.run_name, "run name") if cfg.run_name else out


def saved_epochs(folder: Path, part: str) -> list[int]:
    pat = re.compile(rf"^{re.escape(part)}_ep(\d+)\.pt$")
    return sorted(int(m.group(1)) for p in folder.glob(f"{part}_ep*.pt") if (m := pat.match(p.name)))

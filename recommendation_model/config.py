"""Stage-2 config (TriGRec recommender): YAML sections + the seed's flat key names
(``device``, ``lr``, ``batch_size``, ``num_epochs``, ``seed``, ``spe_emb_path``,
``cross_emb_path``, ``EPOCH_TO_LOAD``, ``SPE_DOMAIN``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from core.data.domains import BERT4RecModelConfig, DomainDataConfig, check_target
from core.errors import ConfigError
from core.seqrec import TRAINING_ALIASES, EvalConfig
from core.train import TrainConfig


@dataclass(frozen=True)
class RecModelConfig(BERT4RecModelConfig):
    """The target-domain BERT4Rec (``core.seqrec.ModelConfig``) plus the fusion switches."""

    maxlen: int = 10
    use_spe: bool = True  # fuse the specific user vectors
    use_cross: bool = True  # fuse the cross-domain user vectors
    gate: bool = True  # G = sigmoid(W1 A1 + W2 A2) mixes the two (False: their sum)
    memory_tokens: int = 4  # key/value tokens each user vector is expanded into
    shuffle_user_vectors: bool = False  # control: permute the vectors across users
    shuffle_seed: int = 0
    # > 0: leak-free training. The exported vectors are encoded from the whole training
    # sequences, so a cloze target is readable from them; instead the last m items of each
    # training row are always masked and predicted through the fusion from vectors cut before
    # them (the export's ``.holdout{m}`` files), the other masked items by plain BERT4Rec
    vector_holdout: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.memory_tokens < 1:
            raise ConfigError("model.memory_tokens must be >= 1")
        if self.vector_holdout and (self.prefix_prob or self.end_mask_prob):
            raise ConfigError("model.prefix_prob / end_mask_prob with model.vector_holdout: holdout rows always mask "
                              "their last items, which a prefix would drop; set one of them to 0")
        if self.vector_holdout < 0:
            raise ConfigError(f"model.vector_holdout={self.vector_holdout}: use 0 (off) or the number of last "
                              "training items predicted from holdout vectors, e.g. 1")
        if self.vector_holdout and not (self.use_spe or self.use_cross):
            raise ConfigError("model.vector_holdout needs user vectors: set use_spe or use_cross to true, or "
                              "vector_holdout=0")


@dataclass(frozen=True)
class RecEvalConfig(EvalConfig):
    c2dsr_negatives: int = 999  # the C2DSR protocol: target vs this many sampled target-domain items
    c2dsr_exclude_history: bool = False  # C2DSR's sampler only avoids the target; True also avoids the history


@dataclass(frozen=True)
class RecConfig:
    ALIASES: ClassVar[dict] = {**TRAINING_ALIASES, "EPOCH_TO_LOAD": "epoch_to_load", "SPE_DOMAIN": "spe_domain"}
    seed: int = 42
    device: str = "auto"
    home: str = ""
    run_name: str = ""  # "" = the seed's layout state_dict/rec/<domain>/maxlen{L}.pt; else a sub-folder
    overwrite: bool = False  # replace an earlier run with another config in that folder (else an error)
    spe_emb_path: str = ""  # "" = the stage-1 export of epoch_to_load in the shared tree
    cross_emb_path: str = ""
    epoch_to_load: int = 0  # which exported stage-1 epoch the default paths name; 0 = the latest exported
    spe_domain: str = ""  # whose specific vectors the default path names; "" = the target
    # evaluate this run's saved maxlen{L}.pt without training (writes eval_results.json beside it,
    # never results.json): e.g. to regenerate per-line rank files of an older run
    eval_only: bool = False
    data: DomainDataConfig = field(default_factory=DomainDataConfig)
    model: RecModelConfig = field(default_factory=RecModelConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60, batch_size=256, eval_every=2,
                                                                     patience=5))
    eval: RecEvalConfig = field(default_factory=lambda: RecEvalConfig(sampled=[]))

    def __post_init__(self) -> None:
        if self.spe_domain:
            object.__setattr__(self, "spe_domain", check_target(self.spe_domain, "SPE_DOMAIN"))

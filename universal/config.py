"""Config of the universal two-tower pipeline.

The schema keeps the upstream RecommendKit key names, so its flat JSON configs load as they
are (JSON is YAML): ``embedding_dim``, ``loss_type``, ``{user,item,interaction}_*`` (aliases of
the ``user`` / ``item`` / ``interaction`` sections), ``classifier_hidden_dims``,
``classifier_dropout``, the five ``*_encoder_config`` sections, ``train_split``,
``batch_size``, ``negative_sampling_ratio``, ``seed``, ``num_epochs``, ``learning_rate``,
``optimizer_type``, ``scheduler_type``, ``print_every`` and ``model_name``. Any other key is
an error naming it (``core.config``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

from core.errors import ConfigError
from core.train import TrainConfig

DEFAULT_DATA = "data/universal-synthetic/data.json"  # generated on first use (universal.synthetic)
DEFAULT_CONFIG = "configs/universal/synthetic.yaml"
# gensim/GloVe names of the upstream configs: not reachable offline, mapped to the shipped encoder
GLOVE_PREFIXES = ("glove-", "word2vec-", "fasttext-")


@dataclass(frozen=True)
class TowerConfig:
    """Fusion of one tower's feature tokens: simple (concat + MLP) or attention (transformer)."""

    use_simple_fusion: bool = True
    num_attention_layers: int = 0
    num_heads: int = 1
    dropout: float = 0.0
    use_cls_token: bool = False  # attention fusion: read a learned CLS token instead of the token mean
    use_layer_norm: bool = False  # attention fusion: LayerNorm on the fused vector
    use_id_embedding: bool = False  # a learned per-entity id vector as one more token

    def check(self, name: str, dim: int) -> None:
        if self.num_attention_layers < 0 or self.num_heads < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"{name}_num_attention_layers must be >= 0, {name}_num_heads >= 1, {name}_dropout in [0, 1)")
        if not self.use_simple_fusion and dim % self.num_heads:
            raise ConfigError(f"embedding_dim ({dim}) must be divisible by {name}_num_heads ({self.num_heads})")


@dataclass(frozen=True)
class InteractionConfig:
    """The classifier scorer's pair fusion (``scorer=classifier`` only)."""

    use_simple_fusion: bool = True
    num_attention_layers: int = 0
    num_heads: int = 1
    dropout: float = 0.0


@dataclass(frozen=True)
class ClassifierConfig:
    hidden_dims: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.0


@dataclass(frozen=True)
class TextEncoderConfig:
    model_name: str = "default"  # default = all-MiniLM-L6-v2 shipped offline; or a local sentence-transformers folder
    aggregation_strategy: Literal["mean", "separate_concat"] = "mean"  # one token for all text fields, or one per field
    embedding_dim: int = 0  # token size; 0 = embedding_dim
    num_text_fields: int = 0  # informational (upstream); fields are read from the data
    batch_size: int = 64


@dataclass(frozen=True)
class CategoricalEncoderConfig:
    aggregation_strategy: Literal["separate_concat", "mean"] = "separate_concat"  # one token per field, or their mean
    hash_vocab_size: int = 0  # > 0: values share this many hashed rows per field; 0: one row per value
    embedding_dim: int = 0
    num_categorical_fields: int = 0  # informational (upstream)
    mlp_hidden_dims: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ContinuousEncoderConfig:
    embedding_dim: int = 0
    hidden_dims: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.0
    normalize: bool = True  # z-score with training-data statistics


@dataclass(frozen=True)
class ImageEncoderConfig:
    embedding_dim: int = 0
    image_size: int = 32  # thumbnails are image_size x image_size RGB
    channels: list[int] = field(default_factory=lambda: [16, 32])  # the small CNN's conv widths
    root: str = ""  # relative image paths are read from here; "" = the data file's folder


@dataclass(frozen=True)
class TemporalEncoderConfig:
    enable_item_lookup: bool = True  # lists of item ids are read through the item id embeddings
    aggregation_strategy: Literal["mean_pooling", "max_pooling"] = "mean_pooling"
    output_dim: int = 0
    max_length: int = 50  # keep the last N entries of a list
    # users' item-id lists vs the held-out items: restrict (drop held-out items, and the target
    # item of each training example), drop (remove the feature), keep (as given: leaks labels)
    user_item_lists: Literal["restrict", "drop", "keep"] = "restrict"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = ""  # output folder name under state_dict/universal/; "" = from the data file name
    train_split: float = 0.8  # per user, the first share of interactions (by time) trains; the rest is held out
    min_interactions: int = 3  # users with fewer interactions are training-only (no hold-out)
    max_users: int = 0  # > 0: a fixed-seed sample of users (smoke runs)
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.train_split < 1:
            raise ConfigError(f"train_split must be in (0, 1), got {self.train_split}")
        if self.min_interactions < 3 or self.max_users < 0:
            raise ConfigError("data.min_interactions must be >= 3 (one train, one valid, one test) and max_users >= 0")


@dataclass(frozen=True)
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    auc_negatives: int = 100  # sampled negatives per held-out positive for AUC (fixed seed)
    sample_seed: int = 0
    batch_size: int = 512  # users scored at once under full ranking


def _tower_aliases() -> dict[str, str]:
    out = {}
    for tower, cls in (("user", TowerConfig), ("item", TowerConfig), ("interaction", InteractionConfig)):
        for f in fields(cls):
            out[f"{tower}_{f.name}"] = f"{tower}.{f.name}"
    return out


@dataclass(frozen=True)
class UniversalConfig:
    ALIASES: ClassVar[dict] = {
        **_tower_aliases(),
        "classifier_hidden_dims": "classifier.hidden_dims",
        "classifier_dropout": "classifier.dropout",
        "num_epochs": "training.epochs",
        "batch_size": "training.batch_size",
        "scheduler_type": "training.lr_schedule",
        "print_every": "training.eval_every",
        "model_name": "run_name",
        "train_split": "data.train_split",
    }
    seed: int = 42
    device: str = "auto"
    home: str = ""  # root of the state_dict tree; default $RECSYS_HOME or <repo>/state_dict
    run_name: str = ""  # state_dict/universal/<dataset>/<run_name>/; "" = the model's name, two-tower-<scorer>
    overwrite: bool = False  # replace an earlier run with another config in that folder (else an error)
    embedding_dim: int = 64  # the towers' output size (and the default size of every feature token)
    scorer: Literal["dot", "classifier"] = "dot"  # dot product (retrieval) or the upstream's classifier head
    # sampled-negative BCE, in-batch softmax, both, or sampled_softmax: one softmax over the in-batch items and
    # each row's negative_sampling_ratio uniform negatives (mixed negatives; log-Q corrected with logq_correction)
    loss_type: Literal["bce", "softmax", "bce+softmax", "sampled_softmax"] = "bce"
    negative_sampling_ratio: float = 1.0  # sampled negatives per positive (fractions drawn per row)
    # in-batch softmax: subtract log(training frequency) of each column's item (Yi et al. 2019), so that
    # popular items, over-represented as in-batch negatives, are not pushed down
    logq_correction: bool = False
    optimizer_type: Literal["adam", "adamw"] = "adam"  # both run core.train's AdamW (weight_decay 0 = Adam)
    custom_encoders: dict = field(default_factory=dict)  # feature type -> registered name or "pkg.module:Class"
    # feature types left out of both towers (ablations), e.g. [text] or [categorical, continuous]
    drop_feature_types: list[str] = field(default_factory=list)
    user: TowerConfig = field(default_factory=TowerConfig)
    item: TowerConfig = field(default_factory=lambda: TowerConfig(use_id_embedding=True))
    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    text_encoder_config: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    categorical_encoder_config: CategoricalEncoderConfig = field(default_factory=CategoricalEncoderConfig)
    continuous_encoder_config: ContinuousEncoderConfig = field(default_factory=ContinuousEncoderConfig)
    image_encoder_config: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    temporal_encoder_config: TemporalEncoderConfig = field(default_factory=TemporalEncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=256, patience=5))
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError("embedding_dim must be >= 1")
        if not 0 < self.negative_sampling_ratio <= 100:
            raise ConfigError(f"negative_sampling_ratio must be in (0, 100], got {self.negative_sampling_ratio}")
        self.user.check("user", self.embedding_dim)
        self.item.check("item", self.embedding_dim)
        if self.scorer == "classifier" and not self.interaction.use_simple_fusion \
                and self.embedding_dim % self.interaction.num_heads:
            raise ConfigError(f"embedding_dim ({self.embedding_dim}) must be divisible by "
                              f"interaction_num_heads ({self.interaction.num_heads})")
        names = {f"{m}@{k}" for m in ("HR", "Recall", "NDCG", "Precision") for k in self.eval.ks} | {"MRR", "AUC"}
        if self.training.metric not in names:
            raise ConfigError(f"training.metric {self.training.metric!r} is not computed; use one of "
                              f"{', '.join(sorted(names))} (eval.ks sets the K values)")
        for name in self.drop_feature_types:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"drop_feature_types: expected feature type names (text, categorical, ...), got {name!r}")
        for name, value in self.custom_encoders.items():
            if not isinstance(value, str):
                raise ConfigError(f"custom_encoders.{name}: expected a registered encoder name or 'pkg.module:Class'")

    def run_folder_name(self) -> str:
        """``run_name``, else the model's name: runs of the two scorers never share a folder."""
        return self.run_name or f"two-tower-{self.scorer}"

    def token_dim(self, own: int) -> int:
        return own or self.embedding_dim


# sections and keys that shape the model: inference refuses a --config that changes them
MODEL_KEYS = ("embedding_dim", "scorer", "custom_encoders", "drop_feature_types", "user", "item", "interaction",
              "classifier", "text_encoder_config", "categorical_encoder_config", "continuous_encoder_config",
              "image_encoder_config", "temporal_encoder_config")


def dataset_name(cfg: UniversalConfig, data_path: str | Path) -> str:
    """The run tree's dataset folder: ``data.dataset``, else the data file's stem (its folder's
    name for ``data.json`` / ``data.jsonl`` / a folder of tables)."""
    import re

    if cfg.data.dataset:
        return cfg.data.dataset
    path = Path(data_path)
    name = path.name if path.is_dir() else (path.parent.name if path.stem == "data" else path.stem)
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("._") or "dataset"

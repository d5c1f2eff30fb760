"""The distillation config: ``core.seqrec.SeqRecConfig`` plus a ``distill`` section.

The seed's YAML is accepted as written: its distillation keys sit under ``model:``,
``training:`` and ``data:`` and are aliases of the ``distill`` fields here, and the seed
README's alternative names (``use_distillation``, ``distillation_alpha``, ...) map onto the
same fields. Seed keys that only describe bookkeeping are kept with a meaning:

- ``model_name`` (``SASRecLLM`` / ``BERT4RecLLM`` / ``SASRec`` / ``BERT4Rec``) sets
  ``model_type`` and whether distillation is on;
- ``item_num`` / ``user_num`` (0 = from the data) are checked against the data;
- ``add_head`` must be true (the output head tied to the item embeddings);
- ``model_dir`` is the root of the output tree (``home``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from core.errors import ConfigError
from core.seqrec import DataConfig, ModelConfig, SeqRecConfig

POOLINGS = {"mean": "mean", "exp": "exp", "exp_weight": "exp", "exponential": "exp", "attention": "attention",
            "attn": "attention"}
RECONSTRUCT_LOSSES = {"mse": "mse", "cosine": "cosine", "cos": "cosine"}
MISSING_POLICIES = ("error", "skip", "zero")


@dataclass(frozen=True)
class DistillSection:
    enabled: bool | None = None  # None: on iff model.model_name names an *LLM model
    # profile embeddings: JSON {user_id: [floats]}; several files = several profiles per user
    profiles: list[str] = field(default_factory=list)
    alpha: float = 0.4  # total = alpha * beta * L_distil + (1 - alpha) * L_model
    dynamic_scaling: bool = True  # beta = stopgrad(L_model / L_distil); False: beta = 1
    pooling: str = "mean"  # mean | exp | attention: how layer states become one user vector
    gamma: float = 0.1  # recency rate of exp pooling
    layer: int = -1  # which block's output is pooled (python index; -1 = last)
    use_down_scale: bool = True  # T maps the profile down to the hidden size
    use_upscale: bool = False  # or: T maps the pooled state up to the profile size
    loss: str = "mse"  # mse | cosine
    fine_tune_epoch: int = 0  # from this (1-based) epoch on: recommendation loss only; 0 = never
    multi_profile: bool = False
    multi_profile_aggr: str = "mean"  # mean | attention over a user's profiles
    missing_profiles: str = "error"  # error | skip (no distillation term for them) | zero
    shuffle_profiles: bool = False  # control: permute profiles across users
    profile_seed: int = 0  # seed of that permutation

    def __post_init__(self) -> None:
        pooling = POOLINGS.get(str(self.pooling).lower())
        if pooling is None:
            raise ConfigError(f"distill.pooling {self.pooling!r}: use mean, exp (exp_weight) or attention")
        object.__setattr__(self, "pooling", pooling)
        loss = RECONSTRUCT_LOSSES.get(str(self.loss).lower())
        if loss is None:
            raise ConfigError(f"distill.loss {self.loss!r}: use MSE or cosine")
        object.__setattr__(self, "loss", loss)
        aggr = str(self.multi_profile_aggr).lower()
        if aggr not in ("mean", "attention"):
            raise ConfigError(f"distill.multi_profile_aggr {self.multi_profile_aggr!r}: use mean or attention")
        object.__setattr__(self, "multi_profile_aggr", aggr)
        if self.missing_profiles not in MISSING_POLICIES:
            raise ConfigError(f"distill.missing_profiles {self.missing_profiles!r}: use one of {', '.join(MISSING_POLICIES)}")
        if self.use_down_scale and self.use_upscale:
            raise ConfigError("distill.use_down_scale and use_upscale are both true; choose one direction for T")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"distill.alpha must be in [0, 1], got {self.alpha}")
        if self.fine_tune_epoch < 0:
            raise ConfigError("distill.fine_tune_epoch must be >= 0 (0 = no fine-tune stage)")
        if self.enabled is True and not self.profiles:
            raise ConfigError("distillation is on but no profile embeddings are given; set "
                              "data.user_profile_embeddings_files (or distill.profiles), e.g. the output of "
                              "`python -m distillation.profiles`")


@dataclass(frozen=True)
class DistillModelConfig(ModelConfig):
    model_type: str = ""  # sasrec | bert4rec; empty = from model_name, else sasrec
    model_name: str = ""  # the seed's SASRecLLM / BERT4RecLLM / SASRec / BERT4Rec
    item_num: int = 0  # 0 = from the data
    user_num: int = 0
    add_head: bool = True

    def __post_init__(self) -> None:
        if self.model_name:
            name = self.model_name.lower()
            base = "bert4rec" if name.startswith("bert4rec") else "sasrec" if name.startswith("sasrec") else None
            if base is None:
                raise ConfigError(f"model.model_name {self.model_name!r}: expected SASRec, SASRecLLM, BERT4Rec or BERT4RecLLM")
            if self.model_type and self.model_type != base:
                raise ConfigError(f"model.model_name {self.model_name!r} contradicts model.model_type {self.model_type!r}")
            object.__setattr__(self, "model_type", base)
        if not self.model_type:
            object.__setattr__(self, "model_type", "sasrec")
        if not self.add_head:
            raise ConfigError("model.add_head: false is not supported; scores always come from the output head "
                              "tied to the item embeddings")
        super().__post_init__()


@dataclass(frozen=True)
class DistillDataConfig(DataConfig):
    # the seed's processed layout: if valid/test files are given, the data comes from them
    profile_train_sequences: str = ""  # training sequences of the distillation stage
    finetune_train_sequences: str = ""  # training sequences from fine_tune_epoch on (default: the same)
    valid_sequences: str = ""
    test_sequences: str = ""
    mappings: str = ""
    counts: str = ""


@dataclass(frozen=True)
class DistillConfig(SeqRecConfig):
    ALIASES: ClassVar[dict] = {
        **SeqRecConfig.ALIASES,
        "model_dir": "home",
        "mask_prob": "model.mask_prob",
        # seed spellings
        "reconstruction_layer": "distill.layer",
        "weighting_scheme": "distill.pooling",
        "weight_scale": "distill.gamma",
        "multi_profile_aggr_scheme": "distill.multi_profile_aggr",
        "reconstruct_loss": "distill.loss",
        "scale_guide_loss": "distill.dynamic_scaling",
        "user_profile_embeddings_files": "distill.profiles",
        # distill keys the seed writes under model:/training: (leaf names resolve only unqualified)
        "alpha": "distill.alpha",
        "fine_tune_epoch": "distill.fine_tune_epoch",
        "multi_profile": "distill.multi_profile",
        "use_down_scale": "distill.use_down_scale",
        "use_upscale": "distill.use_upscale",
        # seed README spellings
        "use_distillation": "distill.enabled",
        "distillation_alpha": "distill.alpha",
        "use_dynamic_scaling": "distill.dynamic_scaling",
        "aggregation_method": "distill.pooling",
        "distillation_layer": "distill.layer",
        "profile_embeddings_path": "distill.profiles",
    }
    pipeline: str = "distillation"
    model: DistillModelConfig = field(default_factory=DistillModelConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    distill: DistillSection = field(default_factory=DistillSection)

    def __post_init__(self) -> None:
        # the seed switches distillation on by naming an *LLM model; an explicit
        # use_distillation wins (the baseline of an *LLM config is use_distillation=false)
        if self.distill.enabled is None:
            on = self.model.model_name.lower().endswith("llm")
            if on and not self.distill.profiles:
                raise ConfigError(f"model.model_name {self.model.model_name} distils profiles but none are given; "
                                  "set data.user_profile_embeddings_files")
            object.__setattr__(self, "distill", replace(self.distill, enabled=on))
        if self.distill.enabled and self.model.cl_weight:
            raise ConfigError("model.cl_weight: the contrastive views are for plain BERT4Rec; the distillation loss "
                              "reads one masking per row: set model.cl_weight=0 or distill.enabled=false")

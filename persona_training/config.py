"""The three YAML files of the pipeline and the command-line front the entry points share.

``data.yaml`` says where the files are (paths relative to the YAML file), ``train.yaml`` how
the encoder trains, ``rerank.yaml`` how caches are built and candidates scored. A command
loads the two it needs into one config with sections ``data`` + ``train`` or ``data`` +
``rerank``; ``--override "key=value,a.b=value"`` then applies to either (a key is a dotted path
``rerank.mode``, a unique leaf name ``max_steps`` or an alias such as ``component``). Paths given
by ``--override`` are relative to the current directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from core.cli import cli_overrides, setup_logging
from core.config import load_config, parse_overrides, resolve_key, to_dict
from core.errors import ConfigError
from core.store import REPO_ROOT, check_name, state_root
from persona_training.schema import DATASETS
from persona_training.texts import FALLBACKS, PAIR_SOURCES, check_mode, parse_fields

CONFIG_ROOT = REPO_ROOT / "configs" / "persona_training"
PATH_KEYS = ("selected", "persona", "loo_history", "item_summary", "aspects", "candidates", "gt", "out_root")


@dataclass(frozen=True)
class DataSection:
    selected: str | None = None  # 4_selected_personas.jsonl (training pairs)
    persona: str | None = None  # 3.5_persona_with_summary.jsonl
    loo_history: str | None = None  # 3.5_history_loo.jsonl (the held-out item is not in it)
    item_summary: str | None = None  # optional 2_summary.jsonl: text of items without personas
    aspects: str | None = None  # optional 2.5_grouped.jsonl: facet text of items (aspects mode)
    candidates: str | None = None  # rerank input: {user_id, results: [{item_id, score}]}
    gt: str | None = None  # rerank ground truth: {user_id, item_id}
    out_root: str | None = None  # empty = <state_dict>/persona_training/<dataset>
    generate: bool = False  # synthetic: write the default files at these paths when missing

    ALIASES: ClassVar[dict] = {"personas": "persona", "history": "loo_history", "ground_truth": "gt",
                               "candidate": "candidates", "selected_personas": "selected"}


@dataclass(frozen=True)
class TrainSection:
    model: str = "default"  # base sentence-transformers model: "default" (MiniLM) or a local folder
    epochs: int = 1
    max_steps: int = 0  # > 0: stop after this many steps (smoke runs); overrides epochs
    batch_size: int = 32  # pairs per step and process; the other pairs of a batch are the negatives
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    temperature: float = 0.05
    symmetric: bool = False  # also the persona -> user direction of InfoNCE
    grad_clip: float = 1.0  # 0 = off
    max_history: int = 20  # most recent interactions per user
    max_seq_length: int = 0  # tokens per text; 0 = the model's own limit
    train_layers: int = 0  # > 0: train only the top N transformer layers (faster on CPU); 0 = all
    freeze_embeddings: bool = False
    mode: str = "summary"  # summary | aspects: how an interaction becomes text
    fields: str = "N,D,I"  # persona fields: N Name, D Description, I Item_Summary, P Preference_Rationale
    pair_source: str = "auto"  # auto | selected | next_item (see persona_training.texts.build_pairs)
    amp: bool = True  # CUDA only; USE_AMP=0 also turns it off
    device: str = "auto"
    seed: int = 42
    threads: int = 0  # CPU threads for torch; 0 = all cores (the same key as training.threads elsewhere)
    log_every: int = 10  # steps between metrics.jsonl lines
    save_every: int = 0  # > 0: write <out>/train/last.pt (trained weights, optimizer, RNG) every N steps
    resume: bool = False  # continue from last.pt exactly (same data and settings)

    ALIASES: ClassVar[dict] = {"lr": "learning_rate", "component": "mode", "tau": "temperature",
                               "num_epochs": "epochs", "model_dir": "model", "model_name": "model",
                               "persona_fields": "fields"}

    def __post_init__(self) -> None:
        check_mode(self.mode)
        parse_fields(self.fields)
        if self.pair_source not in PAIR_SOURCES:
            raise ConfigError(f"train.pair_source {self.pair_source!r}: use auto, selected or next_item")
        if self.batch_size < 2:
            raise ConfigError("train.batch_size must be >= 2: the other pairs of a batch are the negatives")
        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ConfigError("train.temperature and train.learning_rate must be > 0")
        if min(self.epochs, self.log_every) < 1 or min(self.max_steps, self.max_history, self.train_layers,
                                                        self.max_seq_length, self.warmup_steps, self.save_every) < 0:
            raise ConfigError("train: epochs and log_every must be >= 1; max_steps, max_history, train_layers, "
                              "max_seq_length, warmup_steps and save_every >= 0")


@dataclass(frozen=True)
class RerankSection:
    mode: str = "summary"  # summary | aspects (formerly 'component')
    fields: str = "N,D,I"
    num_gpus: int = 1  # cache building runs on this many GPUs in parallel when present
    model: str = "trained"  # trained (<out_root>/train/model) | default (zero-shot MiniLM) | a local folder
    batch_size: int = 64  # texts per encoding batch
    amp: bool = True
    device: str = "auto"
    max_history: int = 20  # most recent interactions averaged into the user vector
    persona_agg: str = "max"  # max | mean over an item's persona similarities
    fusion_weight: float = 0.0  # 0 = persona score only; w: (1-w) z(persona) + w z(upstream score)
    item_fallback: str = "none"  # none | summary: items without personas scored by their summary text
    pad: str = "keep"  # keep: [PAD] keeps its slot (a miss) | drop: removed from the list
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    cold_max_interactions: int = 5  # users with at most this many interactions are "cold"
    head_fraction: float = 0.2  # the most interacted items making up this share of items are "head"
    force: bool = False  # rebuild caches even when they are up to date

    ALIASES: ClassVar[dict] = {"component": "mode", "agg": "persona_agg", "model_dir": "model",
                               "persona_fields": "fields", "fusion": "fusion_weight"}

    def __post_init__(self) -> None:
        check_mode(self.mode)
        parse_fields(self.fields)
        if self.persona_agg not in ("max", "mean"):
            raise ConfigError(f"rerank.persona_agg {self.persona_agg!r}: use max or mean")
        if self.item_fallback not in FALLBACKS:
            raise ConfigError(f"rerank.item_fallback {self.item_fallback!r}: use none or summary")
        if self.pad not in ("keep", "drop"):
            raise ConfigError(f"rerank.pad {self.pad!r}: use keep or drop")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ConfigError(f"rerank.fusion_weight must be in [0, 1], got {self.fusion_weight}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"rerank.ks must be positive integers, got {self.ks}")
        if self.num_gpus < 1 or self.batch_size < 1 or self.max_history < 0:
            raise ConfigError("rerank.num_gpus and batch_size must be >= 1, max_history >= 0")


@dataclass(frozen=True)
class TrainStage:
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    ALIASES: ClassVar[dict] = {**{a: f"data.{t}" for a, t in DataSection.ALIASES.items()},
                               **{a: f"train.{t}" for a, t in TrainSection.ALIASES.items()},
                               "training.threads": "train.threads"}  # what --threads writes in every entry point


@dataclass(frozen=True)
class RerankStage:
    data: DataSection = field(default_factory=DataSection)
    rerank: RerankSection = field(default_factory=RerankSection)
    ALIASES: ClassVar[dict] = {**{a: f"data.{t}" for a, t in DataSection.ALIASES.items()},
                               **{a: f"rerank.{t}" for a, t in RerankSection.ALIASES.items()}}


def default_config(dataset: str, name: str) -> Path:
    return CONFIG_ROOT / dataset / f"{name}.yaml"


def load_stage(stage_cls, files: dict[str, str | Path], overrides: str = ""):
    """Each section from its own YAML (errors name that file), then ``overrides`` over all; data
    paths are resolved: YAML values against the YAML's folder, overridden ones against the cwd."""
    types = typing.get_type_hints(stage_cls)
    base = {f.name: to_dict(load_config(types[f.name], files[f.name])) for f in dataclasses.fields(stage_cls)}
    cfg = load_config(stage_cls, None, overrides, base=base)
    overridden = {resolve_key(stage_cls, k, "--override: ") for k, _v in parse_overrides(overrides)}
    yaml_dir = Path(files["data"]).resolve().parent
    paths = {}
    for key in PATH_KEYS:
        value = getattr(cfg.data, key)
        if value:
            p = Path(value).expanduser()
            paths[key] = str(p if p.is_absolute() else ((Path.cwd() if f"data.{key}" in overridden else yaml_dir) / p).resolve())
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **paths))


def data_files(cfg) -> dict[str, Path | None]:
    return {k: Path(getattr(cfg.data, k)) if getattr(cfg.data, k) else None for k in PATH_KEYS if k != "out_root"}


def out_root(cfg, dataset: str) -> Path:
    if cfg.data.out_root:
        return Path(cfg.data.out_root)
    return state_root() / "persona_training" / check_name(dataset, "dataset")


def parse_args(argv, stage: str, description: str):
    """``(args, config, dataset)`` for ``stage`` in train | cache | rerank.

    Flags as in the seed README: ``--dataset``, ``--data_cfg``, ``--train_cfg`` / ``--rerank_cfg``,
    ``--model_dir``, ``--ks``, plus ``--override``, ``--device`` (and ``--seed`` for training).
    Config paths default to ``configs/persona_training/<dataset>/``.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", choices=DATASETS,
                        help="schema of the files and default config folder (default: synthetic)")
    parser.add_argument("--data_cfg", "--data-cfg", help="data.yaml (default: configs/persona_training/<dataset>/data.yaml)")
    second = "train" if stage == "train" else "rerank"
    parser.add_argument(f"--{second}_cfg", f"--{second}-cfg", dest="second_cfg",
                        help=f"{second}.yaml (default: configs/persona_training/<dataset>/{second}.yaml)")
    parser.add_argument("--model_dir", "--model-dir",
                        help="sentence-transformers folder to " + ("start from" if stage == "train" else
                             "encode with (default: the trained model in <out_root>/train/model); 'default' = MiniLM"))
    if stage == "rerank":
        parser.add_argument("--ks", help="cut-offs, e.g. 5,10,20 (default: rerank.yaml ks)")
    parser.add_argument("--override", action="append", default=[], metavar='"a=1,b.c=x"',
                        help="comma-separated key=value pairs over both configs; values are YAML; may be repeated")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    if stage == "train":
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (train.threads)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    extra = []
    if args.model_dir:
        model = args.model_dir
        if model not in ("default", "trained", "all-MiniLM-L6-v2"):
            model = str(Path(model).expanduser().resolve())
        if any(c in model for c in ",'\""):
            raise ConfigError(f"--model_dir {args.model_dir!r}: commas and quotes in the path cannot be passed; rename the folder")
        extra.append(f"{second}.model='{model}'")
    if getattr(args, "ks", None):
        try:
            ks = [int(k) for k in args.ks.split(",") if k.strip()]
        except ValueError:
            raise ConfigError(f"--ks {args.ks!r}: expected comma-separated integers, e.g. 5,10,20") from None
        extra.append(f"rerank.ks=[{','.join(map(str, ks))}]")
    overrides = ",".join(x for x in [cli_overrides(args), *extra] if x)
    stage_cls = TrainStage if stage == "train" else RerankStage
    files = {"data": args.data_cfg or default_config(args.dataset, "data"),
             second: args.second_cfg or default_config(args.dataset, second)}
    return args, load_stage(stage_cls, files, overrides), args.dataset

"""The sequential-recommendation recipe shared by the pipelines: data -> model -> fit -> test.

``SeqRecConfig`` is the schema (sections ``model``, ``training``, ``data``, ``eval``; the
seeds' key spellings are accepted as aliases) and ``train_and_evaluate`` runs one
experiment: prepare/load data, leave-one-out split, train with ``core.train.fit`` choosing
the checkpoint on validation, then evaluate once on test (full ranking with history
masked, plus sampled protocols) next to the popularity baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from core import store
from core.cli import resolve_device
from core.config import to_dict
from core.data.batches import CausalDataset, ClozeDataset
from core.data.sequences import SequenceData
from core.data.splits import make_split
from core.dist import dist_info, is_main
from core.errors import ConfigError, DataError
from core.evaluation import Evaluator, popularity_score_fn
from core.models import build_model
from core.runs import start_run
from core.train import TrainConfig, fit, prepare_out_dir

SYNTHETIC_NAMES = ("synthetic", "synthetic-a", "synthetic-b")
PREPARE_HINTS = {
    "beauty": "seq-lines --path ../shared/data/amazon-seq/Beauty.txt",
    "sports": "seq-lines --path ../shared/data/amazon-seq/Sports_and_Outdoors.txt",
    "toys": "seq-lines --path ../shared/data/amazon-seq/Toys_and_Games.txt",
    "ml-100k": "movielens --path ../shared/data/ml-100k",
    "ml-1m": "movielens --path <folder with ratings.dat>",
}


@dataclass(frozen=True)
class ModelConfig:
    model_type: str = "sasrec"
    hidden_units: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    dropout_rate: float = 0.2
    maxlen: int = 50
    initializer_range: float = 0.02
    loss: Literal["ce", "sampled_softmax", "bce", "full", "sampled"] = "ce"  # full = ce, sampled = sampled_softmax
    num_negatives: int = 256  # sampled_softmax negatives per batch
    negative_sampler: Literal["uniform", "popularity", "in_batch"] = "uniform"  # non-uniform ones are log-Q corrected
    full_softmax_guard: bool = True  # refuse loss=ce when a batch's logits would not fit in memory
    ce_from_epoch: int = 0  # sampled_softmax / bce until this (1-based) epoch, the full softmax from it; 0 = never
    # the full softmax's gradient: "fused" computes it chunk by chunk in the forward pass (about 0.74x the loss's
    # time); "checkpointed" recomputes chunks under autograd, as every run before stop 40 did (its rows' exact path)
    ce_impl: Literal["fused", "checkpointed"] = "fused"
    mask_prob: float = 0.2  # cloze masking rate (bidirectional models)
    last_mask_prob: float = 0.0  # share of cloze rows masked at the last item only (as at scoring time)
    prefix_prob: float = 0.0  # share of cloze rows cut to a random prefix each epoch (prefix augmentation)
    end_mask_prob: float = 0.0  # cloze: a row's last item is also masked with this probability (on top of mask_prob)
    cl_weight: float = 0.0  # bert4rec: weight of the contrastive loss between two maskings of each row; 0 = off
    cl_temperature: float = 1.0  # its softmax temperature over the batch's dot products
    output_bias: bool = True  # BERT4Rec's per-item output bias (the original has one)
    # causal models: "sequences" = one row per user, every position predicts the next item;
    # "prefixes" = one row per training target, predicted from the last position (as at scoring)
    train_samples: Literal["sequences", "prefixes"] = "sequences"
    # causal sequence rows: fill the padding with repeated copies of the row (RepPad, Dang et al., RecSys 2024),
    # "delimited" with a padding id between copies; drawn again every epoch
    repeat_padding: Literal["off", "plain", "delimited"] = "off"
    filter_alpha: float = 0.7  # bsarec: weight of the Fourier filter against self-attention
    filter_c: int = 5  # bsarec: low-pass cut-off (c // 2 + 1 frequency components kept)
    padding: Literal["zero", "position"] = "zero"  # bsarec: padded positions zero, or position embeddings (authors' code)
    # position embeddings counted back from the newest item (ours) or forward from the oldest one in the window
    # (the original BERT4Rec's and RecBole's left-aligned sequences)
    position_from: Literal["newest", "oldest"] = "newest"

    def __post_init__(self) -> None:
        if self.hidden_units % self.num_heads:
            raise ConfigError(f"model.hidden_units ({self.hidden_units}) must be divisible by model.num_heads ({self.num_heads})")
        if self.maxlen < 2 or not 0 <= self.dropout_rate < 1 or not 0 < self.mask_prob < 1 \
                or not 0 <= self.last_mask_prob <= 1 or not 0 <= self.prefix_prob <= 1 \
                or not 0 <= self.end_mask_prob <= 1:
            raise ConfigError("model.maxlen must be >= 2, dropout_rate in [0, 1), mask_prob in (0, 1), "
                              "last_mask_prob, prefix_prob and end_mask_prob in [0, 1]")
        if self.ce_from_epoch < 0 or (self.ce_from_epoch and self.loss in ("ce", "full")):
            raise ConfigError(f"model.ce_from_epoch={self.ce_from_epoch}: it switches loss=sampled_softmax or bce to "
                              "the full softmax from that epoch; use it with such a loss, or set it to 0")
        if (self.prefix_prob or self.end_mask_prob) and self.model_type != "bert4rec":
            raise ConfigError(f"model.prefix_prob / end_mask_prob shape cloze rows (bert4rec); {self.model_type} is "
                              "causal and trains every prefix already: set them to 0")
        if self.cl_weight < 0 or self.cl_temperature <= 0 or (self.cl_weight and self.model_type != "bert4rec"):
            raise ConfigError(f"model.cl_weight={self.cl_weight} / cl_temperature={self.cl_temperature}: the "
                              "contrastive loss is for bert4rec (two maskings of a row); weight >= 0, temperature > 0")
        if self.padding != "zero" and self.position_from != "newest":
            raise ConfigError("model.position_from=oldest counts real items; model.padding=position gives every padded "
                              "position its own embedding: use one of them")
        if self.padding != "zero" and self.model_type != "bsarec":
            raise ConfigError(f"model.padding={self.padding} is a bsarec setting; {self.model_type} keeps zero padding: "
                              "remove model.padding")
        if self.repeat_padding != "off" and (self.model_type == "bert4rec" or self.train_samples == "prefixes"):
            raise ConfigError(f"model.repeat_padding={self.repeat_padding} fills the padding of next-item sequence "
                              "rows (sasrec, bsarec with train_samples=sequences); set it to off")
        if self.train_samples == "prefixes" and self.model_type == "bert4rec":
            raise ConfigError("model.train_samples=prefixes is for causal models (sasrec, bsarec); "
                              "bert4rec trains by masking: keep train_samples=sequences")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic-a"  # a folder name under data_root, or a path to a prepared folder
    data_root: str = ""  # default: <repo>/data
    split: Literal["loo", "temporal"] = "loo"
    valid_quantile: float = 0.8  # temporal split cut-offs
    test_quantile: float = 0.9


@dataclass(frozen=True)
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    sampled: list[int] = field(default_factory=lambda: [100])  # sampled protocols reported on test
    sample_seed: int = 0
    batch_size: int = 1024
    valid_max_users: int = 0  # 0 = validate on every user
    item_chunk: int = 0  # >0: score items in chunks of this size (peak memory batch x chunk, not batch x catalog)
    # a target already in the user's history: keep = rankable (history masked, target not); exclude = a miss
    repeat_targets: Literal["keep", "exclude"] = "keep"


# the seeds' flat names of model/training keys, shared by every config with those sections
TRAINING_ALIASES = {
    "embedding_dim": "model.hidden_units",
    "num_layers": "model.num_blocks",
    "lr": "training.learning_rate",
    "l2_emb": "training.weight_decay",
    "num_epochs": "training.epochs",
    "batch_size": "training.batch_size",
    # the catalog-scale loss keys also read naturally under training.
    "training.loss": "model.loss",
    "training.num_negatives": "model.num_negatives",
    "training.negative_sampler": "model.negative_sampler",
}


@dataclass(frozen=True)
class SeqRecConfig:
    ALIASES: ClassVar[dict] = {**TRAINING_ALIASES, "experiment_name": "run_name"}
    seed: int = 42
    device: str = "auto"
    run_name: str = ""  # "" = the model's name (model.model_type): state_dict/<pipeline>/<dataset>/<run_name>/
    overwrite: bool = False  # replace an earlier run with another config in that folder (else an error)
    pipeline: str = "seqrec"
    home: str = ""  # root of the output tree; default $RECSYS_HOME or <repo>/state_dict
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def run_name_of(cfg: SeqRecConfig) -> str:
    """The run folder's name: ``run_name``, else the model's name, so that the default runs of
    two models never share a folder."""
    return cfg.run_name or cfg.model.model_type


def item_map_hash(item_ids) -> str:
    """Hash of the raw item id <-> index map: a checkpoint's item rows fit other data only when it matches."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([str(i) for i in item_ids]).encode()).hexdigest()[:16]


def dataset_dir(cfg: DataConfig) -> Path:
    return store.dataset_folder(cfg.dataset, cfg.data_root)


def load_dataset(cfg: DataConfig) -> tuple[SequenceData, Path]:
    """Load a prepared dataset; the synthetic default is generated on first use."""
    path = dataset_dir(cfg)
    if not (path / "meta.json").is_file() and path.name in SYNTHETIC_NAMES:
        from core.data.synthetic import prepare_synthetic

        if is_main():
            prepare_synthetic(path.with_name("synthetic"))
        from core.dist import barrier

        barrier()
    if not path.exists():
        how = PREPARE_HINTS.get(path.name, "<format> --path <raw data>")
        raise DataError(f"{path}: dataset folder not found; prepare it with `python -m core.data.prepare {how}` "
                        "or set data.dataset to a prepared folder")
    return SequenceData.load(path), path


def build_train_data(model_cfg: ModelConfig, split, model, device):
    if getattr(model, "causal", True):
        return CausalDataset(split, model_cfg.maxlen, device=device, prefixes=model_cfg.train_samples == "prefixes",
                             repeat_padding=model_cfg.repeat_padding)
    return ClozeDataset(split, model_cfg.maxlen, model_cfg.mask_prob, device=device,
                        last_mask_prob=model_cfg.last_mask_prob, prefix_prob=model_cfg.prefix_prob,
                        views=2 if model_cfg.cl_weight else 1, end_mask_prob=model_cfg.end_mask_prob)


def encoder_args(cfg: ModelConfig) -> dict:
    """Constructor keywords of the ``cfg.model_type`` encoder (SASRec has no output bias)."""
    args = dict(maxlen=cfg.maxlen, hidden_units=cfg.hidden_units, num_blocks=cfg.num_blocks, num_heads=cfg.num_heads,
                dropout_rate=cfg.dropout_rate, initializer_range=cfg.initializer_range, loss=cfg.loss,
                num_negatives=cfg.num_negatives, negative_sampler=cfg.negative_sampler)
    if cfg.ce_from_epoch:  # only then: checkpoints of existing configs keep their exact args
        args["ce_from_epoch"] = cfg.ce_from_epoch
    if cfg.position_from != "newest":
        args["position_from"] = cfg.position_from
    if cfg.ce_impl != "fused":
        args["ce_impl"] = cfg.ce_impl
    if cfg.model_type == "bsarec":
        extra = {"padding": cfg.padding} if cfg.padding != "zero" else {}
        return {**args, "filter_alpha": cfg.filter_alpha, "filter_c": cfg.filter_c, **extra}
    if cfg.model_type == "sasrec":
        return args
    extra = {"cl_weight": cfg.cl_weight, "cl_temperature": cfg.cl_temperature} if cfg.cl_weight else {}
    return {**args, "output_bias": cfg.output_bias, **extra}


def make_model(cfg: ModelConfig, n_items: int):
    return build_model(cfg.model_type, n_items=n_items, **encoder_args(cfg))


def model_score_fn(model):
    """Scores of all items for the evaluator; also scores item chunks (``eval.item_chunk``)."""
    return ModelScorer(model)


class ModelScorer:
    """A sequential model as the evaluator's ``ChunkScorer``: called, it returns full scores;
    ``encode`` + ``score_chunk`` / ``score_items`` score the catalog a chunk at a time."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, inputs, users):
        return self.model.full_scores(inputs)

    def encode(self, inputs, users):
        return self.model.last_hidden(inputs)

    def score_chunk(self, h, start: int, end: int):
        w = self.model.item_weights()[start:end]
        logits = h @ w.T
        bias = self.model.output_bias()
        if bias is not None:
            logits = logits + bias[start:end]
        if start == 0:
            logits[:, 0] = float("-inf")
        return logits

    def score_items(self, h, items):
        return self.model.logits_of(h, items)


def train_and_evaluate(cfg: SeqRecConfig, log=print, *, load_data=None, make_train=None) -> dict:
    """Run one experiment; returns (and writes ``results.json``) test metrics at the best epoch.

    Pipelines extend the recipe through two hooks: ``load_data(cfg) -> (SequenceData, path)``
    replaces the prepared-folder loader, and ``make_train(cfg, model, data, split, device) ->
    (train_data, loss_fn, info)`` supplies the training rows and loss (``info`` goes into
    ``results.json``).
    """
    ctx = start_run(cfg.device, cfg.seed, threads=cfg.training.threads, log=log)
    device, log = ctx.device, ctx.log
    # names are validated before anything is read or written
    run_name = run_name_of(cfg)
    out_dir = store.run_dir(cfg.pipeline, dataset_dir(cfg.data).name, run_name, cfg.home or None)
    data, data_path = (load_data or load_dataset)(cfg.data)
    split = make_split(data, cfg.data.split, cfg.data.valid_quantile, cfg.data.test_quantile)
    dataset_name = data_path.name
    if dataset_name != out_dir.parent.name:  # a loader hook read data from elsewhere (processed files)
        out_dir = store.run_dir(cfg.pipeline, dataset_name, run_name, cfg.home or None)
    # the folder is this run's from here to the end (results.json included), or nothing is written
    with store.claim_run_dir(out_dir, to_dict(cfg), resume=cfg.training.resume, overwrite=cfg.overwrite, log=log):
        prepare_out_dir(out_dir, cfg, cfg.training.resume)
        return _train_and_test(cfg, log, out_dir, data, split, dataset_name, make_train, device)


def _train_and_test(cfg, log, out_dir, data, split, dataset_name, make_train, device) -> dict:
    # the resolved config is reported by the fit loop: one line with the path of config.yaml
    log(f"data {dataset_name}: {data.n_users} users, {data.n_items} items, {data.n_interactions} interactions; "
        f"split {split.kind}: {len(split.valid)} valid / {len(split.test)} test users -> {out_dir}")

    if cfg.model.full_softmax_guard:  # before the model exists: a refused run allocates nothing
        from core.models.sampled_softmax import check_full_softmax

        loss = "ce" if cfg.model.ce_from_epoch else cfg.model.loss  # a staged loss ends on the full softmax
        check_full_softmax(loss, cfg.training.batch_size, cfg.model.maxlen, data.n_items, device)
    model = make_model(cfg.model, data.n_items).to(device)
    if cfg.model.loss in ("sampled_softmax", "sampled") and cfg.model.negative_sampler == "popularity":
        from core.data.splits import item_popularity

        model.set_item_counts(item_popularity(data, split.train_len))
    if make_train is None:
        train_data, loss_fn, info = build_train_data(cfg.model, split, model, device), None, {}
    else:
        train_data, loss_fn, info = make_train(cfg, model, data, split, device)
    width = cfg.model.maxlen
    valid_eval = Evaluator(split, "valid", width, cfg.eval.ks, sampled=(), sample_seed=cfg.eval.sample_seed,
                           batch_size=cfg.eval.batch_size, device=device, max_users=cfg.eval.valid_max_users,
                           item_chunk=cfg.eval.item_chunk, repeat_targets=cfg.eval.repeat_targets)
    meta = {"kind": model.kind, "model_args": model.model_args, "config": to_dict(cfg),
            "data_fingerprint": data.fingerprint(), "item_map": item_map_hash(data.item_ids)}
    result = fit(model, train_data, lambda m: valid_eval.run(model_score_fn(m)), cfg.training, out_dir,
                 device=device, seed=cfg.seed, checkpoint_meta=meta, log=log,
                 **({"loss_fn": loss_fn} if loss_fn is not None else {}))

    model.eval()
    test_eval = Evaluator(split, "test", width, cfg.eval.ks, sampled=cfg.eval.sampled, sample_seed=cfg.eval.sample_seed,
                          batch_size=cfg.eval.batch_size, device=device, item_chunk=cfg.eval.item_chunk,
                          repeat_targets=cfg.eval.repeat_targets)
    test = test_eval.run(model_score_fn(model))
    test_ranks = test_eval.last_ranks
    popularity = test_eval.run(popularity_score_fn(split))
    results = {
        "dataset": dataset_name, "model": cfg.model.model_type, "run_dir": str(out_dir),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 2), "threads": result.threads,
        "stopped": result.stopped, "valid": result.best_valid, "test": test, "popularity_test": popularity,
        **info,
    }
    if is_main() and dist_info()[1] == 1 and test_ranks is not None:
        # per-user test rank of the target: paired significance tests between runs need it
        store.atomic_save_npz(out_dir / "test_ranks.npz", users=test_ranks[0], ranks=test_ranks[1])
    if is_main():
        from core.provenance import run_record

        # a loader hook may read other files than the prepared folder: then only the loaded data's fingerprint
        results["run"] = run_record(cfg, device=device, threads=result.threads, started=result.started,
                                    data_paths=[p for p in [dataset_dir(cfg.data)] if p.name == dataset_name],
                                    data_fingerprint=meta["data_fingerprint"])
        store.atomic_write_json(out_dir / "results.json", results)
    return results


def load_trained_model(path: str | Path, data, data_path, device, *, check_fingerprint: bool = True,
                       check=None):
    """A SASRec / BERT4Rec checkpoint as an eval-mode model on ``device`` for ``data``: the data
    fingerprint checked unless ``check_fingerprint`` is off (then ``check(ckpt)`` may compare the
    item maps), and the catalog size always. Returns ``(model, checkpoint)``."""
    from core.models import MODELS

    ckpt = store.load_checkpoint(path, kind=tuple(MODELS), map_location=device,
                                 data_fingerprint=data.fingerprint() if check_fingerprint else None)
    if check is not None:
        check(ckpt)
    args = ckpt["model_args"]
    if args["n_items"] != data.n_items:
        raise DataError(f"{path}: model has {args['n_items']} items but {data_path} has {data.n_items}")
    model = build_model(ckpt["kind"], **args).to(device)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, ckpt


def evaluate_checkpoint(path: str | Path, cfg: SeqRecConfig, log=print, *, load_data=None) -> dict:
    """Test metrics of a saved checkpoint on the dataset named by ``cfg`` (fingerprint checked)."""
    device = resolve_device(cfg.device)
    data, data_path = (load_data or load_dataset)(cfg.data)
    model, _ckpt = load_trained_model(path, data, data_path, device)
    split = make_split(data, cfg.data.split, cfg.data.valid_quantile, cfg.data.test_quantile)
    out = {}
    for which in ("valid", "test"):
        ev = Evaluator(split, which, args["maxlen"], cfg.eval.ks, sampled=cfg.eval.sampled,
                       sample_seed=cfg.eval.sample_seed, batch_size=cfg.eval.batch_size, device=device,
                       item_chunk=cfg.eval.item_chunk, repeat_targets=cfg.eval.repeat_targets)
        out[which] = ev.run(model_score_fn(model))
    return out

"""The user/persona encoder: one sentence-transformers model for both sides.

A user is the mean of the (normalized) embeddings of their interaction texts, renormalized; a
persona is the embedding of its text. Training pulls each user towards the persona selected for
their target item and away from the other personas of the batch (in-batch InfoNCE).

- AMP on CUDA by default (bf16 where supported, else fp16 with a grad scaler, as in
  ``core.train``); ``USE_AMP=0`` or ``amp: false`` turns it off. CPU runs in fp32.
- torchrun: with ``WORLD_SIZE > 1`` the model is wrapped in DDP and each rank takes its own
  slice of every epoch's shuffled pairs; negatives are the rank's own batch. Rank 0 writes.
- The loop is ``core.train.fit`` in step mode (the one trainer): AMP, DDP, clipping, warmup,
  ``last.pt`` every ``save_every`` steps and exact resume live there.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core.cli import seed_everything
from core.dist import barrier, is_main
from core.errors import ConfigError, DataError
from core.runs import start_run
from core.store import atomic_write_json
from core.text import load_text_encoder
from core.train import TrainConfig, amp_dtype, fit

META_FILE = "persona_training.json"  # written beside a trained model: how it was trained
_LAYER = re.compile(r"\.layer\.(\d+)\.")


def load_encoder(model: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 max_seq_length: int = 0):
    """A private SentenceTransformer (never the instance shared through ``core.text``, whose
    weights must not change under other callers). ``model``: None/"default" = the offline MiniLM."""
    enc = load_text_encoder(model, str(device), fresh=True)
    if max_seq_length:
        enc.max_seq_length = max_seq_length
    return enc


def _features(model, texts: list[str], device: torch.device) -> dict:
    prep = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 6 / older
    feats = prep(texts)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in feats.items()}


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], batch_size: int = 64, amp: bool = True, show_progress: bool = False,
                out: np.ndarray | None = None, desc: str = "encoding") -> np.ndarray:
    """L2-normalized embeddings ``[len(texts), dim]`` (float32, or written into ``out``, e.g. a
    float16 memmap slice). Longest texts first, so batches carry little padding."""
    texts = list(texts)
    device = _device_of(model)
    dtype = amp_dtype(device, amp)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    was_training = model.training
    model.eval()
    try:
        for start in _bar(iterable=range(0, len(order), batch_size), desc=desc, unit="batch", leave=False,
                          disable=not show_progress or len(order) <= batch_size):
            idx = order[start:start + batch_size]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                emb = model(_features(model, [texts[i] for i in idx], device))["sentence_embedding"]
            emb = F.normalize(emb.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb.astype(out.dtype, copy=False)
    finally:
        model.train(was_training)
    if out is None:  # no texts
        out = np.zeros((0, embedding_dim(model)), dtype=np.float32)
    return out


def embedding_dim(model) -> int:
    for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension"):  # new / old sentence-transformers
        fn = getattr(model, attr, None)
        if callable(fn) and fn():
            return int(fn())
    raise ValueError("the model does not report its embedding dimension")


def _bar(**kwargs):
    # a log file gets a line a minute, a terminal a live bar
    return tqdm(mininterval=1.0 if sys.stderr.isatty() else 60.0, dynamic_ncols=True, **kwargs)


def mean_pool(rows: np.ndarray | torch.Tensor, lengths: Sequence[int]):
    """Per-segment mean of consecutive rows, L2-normalized; an empty segment gives zeros."""
    lengths_t = torch.as_tensor(list(lengths), dtype=torch.long)
    x = torch.as_tensor(rows).float() if isinstance(rows, np.ndarray) else rows.float()
    seg = torch.repeat_interleave(torch.arange(len(lengths_t), device=x.device), lengths_t.to(x.device))
    sums = torch.zeros(len(lengths_t), x.shape[1], device=x.device, dtype=x.dtype).index_add_(0, seg, x)
    pooled = F.normalize(sums / lengths_t.clamp(min=1).to(x.device).unsqueeze(1).to(x.dtype), dim=-1)
    return pooled.numpy() if isinstance(rows, np.ndarray) else pooled


def as_history(history: str | Sequence[str]) -> list[str]:
    return [history] if isinstance(history, str) else list(history)


def embed_histories(model, histories: Sequence[str | Sequence[str]], batch_size: int = 64, amp: bool = True,
                    show_progress: bool = False) -> np.ndarray:
    """One normalized vector per user: the mean of their interaction-text embeddings."""
    lists = [as_history(h) for h in histories]
    flat = [t for h in lists for t in h]
    return mean_pool(embed_texts(model, flat, batch_size, amp, show_progress), [len(h) for h in lists])


# --------------------------------------------------------------------------- loss
def info_nce(users: torch.Tensor, targets: torch.Tensor, temperature: float = 0.05,
             groups: Sequence | torch.Tensor | None = None, symmetric: bool = False) -> torch.Tensor:
    """In-batch InfoNCE: row i of ``users`` should pick row i of ``targets`` among all rows.

    ``mean_i -log softmax_j(u_i . t_j / temperature)[i]``; rows sharing a ``groups`` value (the same
    target item) are masked out of each other's negatives. ``symmetric`` averages in the
    targets -> users direction. Inputs are used as given (normalize them for cosine).
    """
    logits = users.float() @ targets.float().T / temperature
    if groups is not None:
        if not torch.is_tensor(groups):
            codes: dict = {}
            groups = torch.tensor([codes.setdefault(g, len(codes)) for g in groups])
        groups = groups.to(logits.device)
        same = groups.unsqueeze(0) == groups.unsqueeze(1)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(len(logits), device=logits.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss


# --------------------------------------------------------------------------- training
def set_trainable(model: nn.Module, train_layers: int = 0, freeze_embeddings: bool = False) -> list[nn.Parameter]:
    """Choose what trains; returns the trainable parameters.

    The BERT pooler never trains: sentence-transformers pools token states itself, so the pooler
    gets no gradient and DDP would wait for it. ``train_layers=N`` trains the top N transformer
    layers only (and the modules after them), which is what makes CPU fine-tuning affordable.
    """
    named = list(model.named_parameters())
    layers = [int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))]
    if train_layers and not layers:
        raise ConfigError("train.train_layers needs a transformer whose parameters are named '...layer.N...'; "
                          "use train_layers=0 (train everything) for this model")
    first = (max(layers) + 1 - train_layers) if train_layers else 0
    out = []
    for name, p in named:
        m = _LAYER.search(name)
        below = m is not None and int(m.group(1)) < first
        embeddings = ".embeddings." in name and (freeze_embeddings or train_layers > 0)
        p.requires_grad_(not (below or embeddings or ".pooler." in name))
        if p.requires_grad:
            out.append(p)
    return out


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    pairs_seen: int  # over all ranks
    seconds: float
    pairs_per_s: float
    first_loss: float
    last_loss: float  # mean of the last log window
    model_dir: Path | None


def _as_pair(p) -> tuple[list[str], str, object]:
    """(history, target[, group]) or a ``texts.Pair``; the group defaults to the target text."""
    history, target = p[0], p[1]
    group = p[2] if len(p) > 2 else target
    hist = as_history(history)
    if not hist or not all(isinstance(t, str) for t in hist) or not isinstance(target, str):
        raise DataError(f"a training pair needs a non-empty history of strings and a target string, got {p!r:.120}")
    return hist, target, group


class _PairRows:
    """The training pairs as ``core.train.fit`` rows. Every epoch is one ``randperm`` of a
    generator seeded once (the same permutation on every rank), replayed from the seed, so an
    epoch's order is a function of its number and a resumed run finds it again; each rank
    takes its slice of it, in full batches only (every step has the same number of negatives)."""

    def __init__(self, items: list, seed: int, per_rank: int, batch: int) -> None:
        self.items, self.seed, self.per_rank, self.batch = items, seed, per_rank, batch
        self._gen = torch.Generator().manual_seed(seed)
        self._next, self._perm = 0, None  # the epoch the generator draws next; the last one drawn

    def __len__(self) -> int:
        return len(self.items)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch == self._next - 1:
            return self._perm
        if epoch < self._next:
            self._gen.manual_seed(self.seed)
            self._next = 0
        while self._next <= epoch:
            self._perm = torch.randperm(len(self.items), generator=self._gen)
            self._next += 1
        return self._perm

    def epoch_batches(self, epoch: int, rank: int, world: int, batch_size: int) -> list[torch.Tensor]:
        perm = self._permutation(epoch)[: self.per_rank * world][rank::world]
        return [perm[b * self.batch:(b + 1) * self.batch] for b in range(self.per_rank // self.batch)]

    def get_batch(self, index: torch.Tensor, generator=None) -> dict:
        chunk = [self.items[i] for i in index.tolist()]
        codes: dict = {}  # groups as codes: rows of one target item are not each other's negatives
        return {"hist": [t for h, _t, _g in chunk for t in h], "targets": [t for _h, t, _g in chunk],
                "lengths": [len(h) for h, _t, _g in chunk],
                "groups": torch.tensor([codes.setdefault(g, len(codes)) for _h, _t, g in chunk])}


def _pair_loss(device: torch.device, world: int, temperature: float, symmetric: bool) -> Callable:
    """``fit``'s loss: in-batch InfoNCE of the pooled user histories against the persona texts.
    The encoder runs under ``fit``'s autocast; pooling and the loss run in fp32."""

    def loss(model, batch: dict, _generator) -> torch.Tensor:
        hist, targets = batch["hist"], batch["targets"]
        if world > 1:  # DDP: one forward per backward, so both sides go through together
            emb = model(_features(model, hist + targets, device))["sentence_embedding"]
        else:  # two calls: each side is padded to its own longest text (~30% fewer tokens)
            emb = torch.cat([model(_features(model, hist, device))["sentence_embedding"],
                             model(_features(model, targets, device))["sentence_embedding"]])
        with torch.autocast(device.type, enabled=False):
            emb = F.normalize(emb.float(), dim=-1)
            users = mean_pool(emb[: len(hist)], batch["lengths"])
            return info_nce(users, emb[len(hist):], temperature, batch["groups"], symmetric)

    return loss


def train_pairs(pairs: Sequence, cfg, *, out_dir: str | Path | None = None, model=None, meta: dict | None = None,
                log: Callable[[str], None] = print, show_progress: bool = True) -> TrainResult:
    """Fine-tune on ``(history, persona_text[, group])`` pairs with in-batch InfoNCE.

    ``cfg`` is a ``TrainSection`` (model, batch_size, learning_rate, temperature, epochs/max_steps,
    ...). ``history`` is one text or a list of interaction texts. ``model`` (a SentenceTransformer)
    is trained in place when given, else ``cfg.model`` is loaded. The loop is ``core.train.fit``
    in step mode. With ``out_dir`` rank 0 writes ``metrics.jsonl`` (one line per ``log_every``
    steps), ``last.pt`` every ``save_every`` steps (the trained layers, optimizer, RNG) and the
    model to ``out_dir/model`` (replaced atomically, with ``persona_training.json`` holding
    ``meta`` and the run's numbers).
    """
    items = [_as_pair(p) for p in pairs]
    run = start_run(cfg.device, threads=cfg.threads, log=log)
    device, world, log = run.device, run.world, run.log
    per_rank = len(items) // world
    if per_rank < 2:
        raise DataError(f"{len(items)} training pairs for {world} process(es): in-batch negatives need at least 2 per process")
    seed_everything(cfg.seed)
    if model is None:
        t_load = time.perf_counter()
        log(f"loading encoder {cfg.model} on {device} ...")  # a status line before the slow preparation
        model = load_encoder(cfg.model, device, cfg.max_seq_length)
        log(f"encoder loaded in {time.perf_counter() - t_load:.1f}s")
    elif cfg.max_seq_length:
        model.max_seq_length = cfg.max_seq_length
    model.to(device)
    params = set_trainable(model, cfg.train_layers, cfg.freeze_embeddings)
    batch = min(cfg.batch_size, per_rank)
    steps_per_epoch = per_rank // batch  # full batches only: every step has the same number of negatives
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    dtype = amp_dtype(device, cfg.amp)
    log(f"training on {len(items)} pairs: {total} steps of {batch} pairs x {world} process(es), "
        f"{sum(p.numel() for p in params) / 1e6:.1f}M trainable parameters "
        f"({'top ' + str(cfg.train_layers) + ' layer(s)' if cfg.train_layers else 'all layers'}), "
        f"max_seq_length {model.max_seq_length}, device {device}"
        + (f", AMP {str(dtype).removeprefix('torch.')}" if dtype else ""))
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=batch, learning_rate=cfg.learning_rate,
                       weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, warmup_steps=cfg.warmup_steps,
                       amp=cfg.amp, resume=cfg.resume, length_buckets=False, patience=0, threads=cfg.threads,
                       max_steps=total, log_every_steps=cfg.log_every, save_every_steps=cfg.save_every)
    # last.pt must agree with the pairs and every setting that shapes the steps to be resumed
    meta_ckpt = {"kind": "persona_encoder", "model_args": {"base_model": str(cfg.model)}, "config": {},
                 "data_fingerprint": _pairs_fingerprint(items, cfg, world)}
    res = fit(model, _PairRows(items, cfg.seed, per_rank, batch), None, tcfg, out_dir, device=device, seed=cfg.seed,
              checkpoint_meta=meta_ckpt, loss_fn=_pair_loss(device, world, cfg.temperature, cfg.symmetric), log=log,
              make_optimizer=lambda _m: torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
              trained_only=True, unit="pairs", progress=show_progress)
    step, seconds = res.steps, res.seconds
    seen = step * batch * world
    result = TrainResult(model, step, seen, seconds, seen / max(seconds, 1e-9), res.first_loss, res.last_loss, None)
    if out_dir is not None:
        result.model_dir = Path(out_dir) / "model"
        if is_main():
            info = {**(meta or {}), "base_model": str(cfg.model), "steps": step, "pairs": len(items),
                    "pairs_seen": seen, "seconds": round(seconds, 3), "pairs_per_s": round(result.pairs_per_s, 2),
                    "first_loss": result.first_loss, "last_loss": res.last_loss, "processes": world,
                    "temperature": cfg.temperature, "batch_size": batch, "learning_rate": cfg.learning_rate}
            save_encoder(model, result.model_dir, info)
        barrier()
    return result


def _pairs_fingerprint(items: list, cfg, world: int) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps([[list(h), t, g] for h, t, g in items], ensure_ascii=False, default=str).encode())
    h.update(json.dumps([str(cfg.model), cfg.batch_size, cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps,
                         cfg.temperature, cfg.symmetric, cfg.seed, cfg.max_steps, cfg.epochs, cfg.train_layers,
                         cfg.max_seq_length, world]).encode())
    return h.hexdigest()[:16]


def save_encoder(model, path: str | Path, meta: dict | None = None) -> Path:
    """Write a sentence-transformers folder at ``path``, replacing an old one only once the new
    one is complete (built beside it, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(str(tmp), create_model_card=False)
        atomic_write_json(tmp / META_FILE, meta or {})
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_meta(model_dir: str | Path) -> dict:
    import json

    p = Path(model_dir) / META_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

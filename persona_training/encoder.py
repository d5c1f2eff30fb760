"""The user/persona encoder: one sentence-transformers model for both sides.

A user is the mean of the (normalized) embeddings of their interaction texts, renormalized; a
persona is the embedding of its text. Training pulls each user towards the persona selected for
their target item and away from the other personas of the batch (in-batch InfoNCE).

- AMP on CUDA by default (bf16 where supported, else fp16 with a grad scaler, as in
  ``core.train``); ``USE_AMP=0`` or ``amp: false`` turns it off. CPU runs in fp32.
- torchrun: with ``WORLD_SIZE > 1`` the model is wrapped in DDP and each rank takes its own
  slice of every epoch's shuffled pairs; negatives are the rank's own batch. Rank 0 writes.
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

from core import store
from core.cli import resolve_device, seed_everything
from core.dist import all_reduce_mean, barrier, init_distributed, is_main
from core.errors import CheckpointError, ConfigError, DataError
from core.store import append_jsonl, atomic_write_json
from core.text import load_text_encoder
from core.train import amp_dtype, gather_rng_states, kill_hook, rng_state, set_rng_state, set_threads, truncate_log

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


def train_pairs(pairs: Sequence, cfg, *, out_dir: str | Path | None = None, model=None, meta: dict | None = None,
                log: Callable[[str], None] = print, show_progress: bool = True) -> TrainResult:
    """Fine-tune on ``(history, persona_text[, group])`` pairs with in-batch InfoNCE.

    ``cfg`` is a ``TrainSection`` (model, batch_size, learning_rate, temperature, epochs/max_steps,
    ...). ``history`` is one text or a list of interaction texts. ``model`` (a SentenceTransformer)
    is trained in place when given, else ``cfg.model`` is loaded. With ``out_dir`` rank 0 writes
    ``metrics.jsonl`` (one line per ``log_every`` steps) and the model to ``out_dir/model``
    (replaced atomically, with ``persona_training.json`` holding ``meta`` and the run's numbers).
    """
    items = [_as_pair(p) for p in pairs]
    device = resolve_device(cfg.device)
    rank, world, _ = init_distributed(device)
    set_threads(cfg.threads)
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
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batch = min(cfg.batch_size, per_rank)
    steps_per_epoch = per_rank // batch  # full batches only: every step has the same number of negatives
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    log_path = Path(out_dir) / "metrics.jsonl" if out_dir is not None else None
    last_path = Path(out_dir) / "last.pt" if out_dir is not None else None
    trained = {name for name, p in model.named_parameters() if p.requires_grad}  # all last.pt holds of the model
    # what last.pt must agree with to be resumed: the pairs and every setting that shapes the steps
    fingerprint = _pairs_fingerprint(items, cfg, world)
    generator = torch.Generator().manual_seed(cfg.seed)  # same permutation on every rank
    step, epoch, skip, first_loss, window, window_n = 0, 0, 0, None, 0.0, 0
    last_loss = float("nan")
    epoch_gen = generator.get_state()
    if cfg.resume and last_path is not None and last_path.is_file():
        ckpt = store.load_checkpoint(last_path, kind="persona_encoder", data_fingerprint=fingerprint)
        state = dict(model.named_parameters())
        if set(ckpt["model_state"]) != trained:
            raise CheckpointError(f"{last_path}: trains other layers than this run (train_layers, freeze_embeddings); "
                                  "start a fresh run or use the same settings")
        with torch.no_grad():
            for name, value in ckpt["model_state"].items():
                state[name].copy_(value)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        loop = ckpt["loop"]
        step, epoch, skip, first_loss = loop["step"], loop["epoch"] - 1, loop["batch"], loop["first_loss"]
        window, window_n, last_loss = loop["window"], loop["window_n"], loop["last_loss"]
        set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0], generator)
        generator.set_state(loop["epoch_generator"])  # the epoch's permutation is drawn again below
        if log_path is not None and is_main():
            truncate_log(log_path, step, key="step")
        log(f"resumed from {last_path} at step {step}")
    elif log_path is not None and is_main():
        if cfg.resume:
            log(f"resume requested but {last_path} does not exist; starting fresh")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)  # one log per run
    log(f"training on {len(items)} pairs: {total} steps of {batch} pairs x {world} process(es), "
        f"{sum(p.numel() for p in params) / 1e6:.1f}M trainable parameters "
        f"({'top ' + str(cfg.train_layers) + ' layer(s)' if cfg.train_layers else 'all layers'}), "
        f"max_seq_length {model.max_seq_length}, device {device}"
        + (f", AMP {str(dtype).removeprefix('torch.')}" if dtype else ""))

    model.train()
    after_step = kill_hook()
    t0 = t_window = t_step = time.perf_counter()
    start_step = step
    bar = _bar(total=total, initial=step, desc="train", unit="step", disable=not (show_progress and is_main()),
               leave=False)
    while step < total:
        epoch_gen = generator.get_state()
        perm = torch.randperm(len(items), generator=generator)[: per_rank * world][rank::world]
        epoch += 1
        for b in range(skip, steps_per_epoch):
            if step >= total:
                break
            chunk = [items[i] for i in perm[b * batch:(b + 1) * batch].tolist()]
            hist = [t for h, _t, _g in chunk for t in h]
            targets = [t for _h, t, _g in chunk]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                if world > 1:  # DDP: one forward per backward, so both sides go through together
                    emb = net(_features(model, hist + targets, device))["sentence_embedding"]
                else:  # two calls: each side is padded to its own longest text (~30% fewer tokens)
                    emb = torch.cat([net(_features(model, hist, device))["sentence_embedding"],
                                     net(_features(model, targets, device))["sentence_embedding"]])
            emb = F.normalize(emb.float(), dim=-1)
            users = mean_pool(emb[: len(hist)], [len(h) for h, _t, _g in chunk])
            loss = info_nce(users, emb[len(hist):], cfg.temperature, [g for _h, _t, g in chunk], cfg.symmetric)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            value = float(loss.detach())
            first_loss = value if first_loss is None else first_loss
            window, window_n = window + value, window_n + 1
            step_s = time.perf_counter() - t_step
            t_step = time.perf_counter()
            bar.set_postfix(loss=f"{value:.4f}", s_per_step=f"{step_s:.1f}", refresh=False)  # shown by update
            bar.update(1)
            if step == start_step + 1 and step < total:  # a first sign of life (and the pace) in any log
                log(f"step {step}/{total} took {step_s:.1f}s (loss {value:.4f}); "
                    f"about {step_s * (total - step) / 60:.1f} min to go")
            if step % cfg.log_every == 0 or step == total:
                now = time.perf_counter()
                last_loss = all_reduce_mean(window / window_n, device)  # every rank logs at the same steps
                row = {"step": step, "epoch": epoch, "loss": round(last_loss, 6), "lr": scheduler.get_last_lr()[0],
                       "pairs_per_s": round(window_n * batch * world / max(now - t_window, 1e-9), 2),
                       "seconds": round(now - t0, 3)}
                if log_path is not None and is_main():
                    append_jsonl(log_path, row)
                log(f"step {step:5d}/{total} loss {last_loss:.4f} | {row['pairs_per_s']:.1f} pairs/s")
                window, window_n, t_window = 0.0, 0, now
            if cfg.save_every and last_path is not None and step % cfg.save_every == 0 and step < total:
                rng = gather_rng_states(rng_state(generator))  # every rank's, so a resumed DDP run draws the same
                if is_main():
                    store.save_checkpoint(
                        last_path, kind="persona_encoder", data_fingerprint=fingerprint,
                        model_state={n: p.detach().cpu() for n, p in model.named_parameters() if n in trained},
                        model_args={"base_model": str(cfg.model)}, config={}, optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=rng,
                        loop={"step": step, "epoch": epoch, "batch": b + 1, "first_loss": first_loss, "window": window,
                              "window_n": window_n, "last_loss": last_loss, "epoch_generator": epoch_gen})
                barrier()
            after_step()
        skip = 0
    bar.close()
    seconds = time.perf_counter() - t0
    seen = step * batch * world
    result = TrainResult(model, step, seen, seconds, seen / max(seconds, 1e-9),
                         float("nan") if first_loss is None else first_loss, last_loss, None)
    if out_dir is not None:
        result.model_dir = Path(out_dir) / "model"
        if is_main():
            info = {**(meta or {}), "base_model": str(cfg.model), "steps": step, "pairs": len(items),
                    "pairs_seen": seen, "seconds": round(seconds, 3), "pairs_per_s": round(result.pairs_per_s, 2),
                    "first_loss": result.first_loss, "last_loss": last_loss, "processes": world,
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

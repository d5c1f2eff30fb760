"""The one fit loop every pipeline uses.

- AMP on CUDA by default (bf16 where supported, else fp16 with a grad scaler); ``USE_AMP=0``
  or ``amp: false`` turns it off. CPU runs in fp32 (bf16 autocast with ``cpu_bf16: true``).
- ``threads``: torch's CPU thread count, set here and recorded in every run's results.
- ``micro_batch_size``: a batch's forward/backward in pieces (gradient accumulation), for
  memory; the optimizer steps are the batches' own.
- torchrun: detected from the environment; the loss module is wrapped in DDP, each rank
  takes a ``DistributedSampler`` shard of the training rows, rank 0 writes every file, and
  losses/metrics are reduced across ranks.
- Validation every ``eval_every`` epochs, and always on the last epoch a run trains (the
  last of ``epochs``, or the one that spends ``time_budget_s``); the best epoch on the
  validation metric is saved as ``best.pt`` (test data is never looked at here); early stop
  after ``patience`` evaluations without improvement.
- ``last.pt`` after every epoch holds model, optimizer, scheduler, scaler, RNG and loop
  state; ``resume`` continues from it exactly.
- One metrics line per epoch on stdout and in ``metrics.jsonl``; tqdm over batches; with
  ``tensorboard: true`` the same numbers as TensorBoard events in the run folder.
- The resolved config goes to ``config.yaml`` in the run folder; stdout gets its path (the
  whole text only under ``--verbose``).

Step mode (``max_steps > 0``): the same steps, counted instead of epochs (epochs repeat until
``max_steps``; ``epochs`` is not used). A metrics line every ``log_every_steps`` steps and at the
last (``step``, ``epoch``, ``loss``: the window's mean, ``lr``, ``<unit>_per_s``, ``seconds``),
validation every ``eval_every_steps`` steps and at the last (``best.pt`` and patience as above,
counted in steps), ``last.pt`` every ``save_every_steps`` steps, mid-epoch, resumed exactly
(the epoch's batch order is recomputed and its done batches skipped), ``time_budget_s`` checked
after every step. ``validate=None`` trains without validation (no ``best.pt``; the last weights
stay) and ``out_dir=None`` writes nothing, in either mode.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from core import store
from core.data.batches import length_bucketed
from core.dist import all_reduce_mean, barrier, dist_info, is_main
from core.errors import CheckpointError
from core.provenance import cpu_has_native_bf16


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | cosine (after warmup)
    eval_every: int = 1
    patience: int = 10  # evaluations without improvement before stopping; 0 = never stop early
    metric: str = "NDCG@10"  # validation metric that picks the best checkpoint
    amp: bool = True  # CUDA only; USE_AMP=0 in the environment also disables it
    cpu_bf16: bool = False  # bf16 autocast of training steps on CPU (evaluation stays fp32); see benchmarks/README.md
    resume: bool = False
    max_steps_per_epoch: int = 0  # 0 = a full pass; >0 caps batches per epoch (smoke runs)
    time_budget_s: float = 0.0  # 0 = none; else stop after the epoch that crosses it
    length_buckets: bool = True  # batch users of similar length together (less padding)
    save_checkpoints: bool = True  # last.pt after every epoch (needed for resume); best.pt is always kept
    threads: int = 0  # CPU threads of torch's intra-op pool; 0 = torch's default (all cores); --threads N sets it
    micro_batch_size: int = 0  # > 0: each batch's forward/backward in pieces of this many rows (gradient accumulation: less memory, same steps)
    tensorboard: bool = False  # also write metrics as TensorBoard events into the run folder (needs the tensorboard package)
    max_steps: int = 0  # > 0: step mode, train this many optimizer steps (epochs repeat as needed; `epochs` is not used)
    log_every_steps: int = 0  # step mode: a metrics line every N steps; 0 = at the last step only
    eval_every_steps: int = 0  # step mode: validate every N steps; 0 = at the last step only
    save_every_steps: int = 0  # step mode: last.pt every N steps (mid-epoch; resume needs it); 0 = never

    def __post_init__(self) -> None:
        from core.errors import ConfigError

        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("training.epochs, batch_size and eval_every must be >= 1")
        if self.learning_rate <= 0:
            raise ConfigError("training.learning_rate must be > 0")
        if self.micro_batch_size < 0:
            raise ConfigError(f"training.micro_batch_size must be >= 0 (0 = whole batches), got {self.micro_batch_size}")
        if self.threads < 0:
            raise ConfigError(f"training.threads must be >= 0 (0 = all cores), got {self.threads}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"training.lr_schedule {self.lr_schedule!r} is not constant or cosine")
        if min(self.max_steps, self.log_every_steps, self.eval_every_steps, self.save_every_steps) < 0:
            raise ConfigError("training.max_steps, log_every_steps, eval_every_steps and save_every_steps must be >= 0")


KILL_ENV = "RECSYS_TEST_SIGKILL_AFTER_STEPS"


def kill_hook() -> Callable[[], None]:
    """For the kill-and-resume tests: with ``$RECSYS_TEST_SIGKILL_AFTER_STEPS=N`` the returned
    callable SIGKILLs this process at its N-th call (one call per optimizer step), a real crash
    in the middle of an epoch with no chance to clean up. A no-op when the variable is unset."""
    limit = int(os.environ.get(KILL_ENV, "0") or 0)
    count = [0]

    def step() -> None:
        count[0] += 1
        if limit and count[0] >= limit:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return step


def prepare_out_dir(out_dir: Path, cfg, resume: bool) -> None:
    """Create a run folder (rank 0). Nothing in it changes yet: ``fit`` writes the resolved
    ``config.yaml`` and drops an old ``metrics.jsonl`` (a resumed run appends to it) only once
    the data, the model and any ``last.pt`` to resume from have been accepted, so a run that
    stops on bad input leaves an earlier run's files as they were."""
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)


def mean_epoch_seconds(out_dir: Path) -> float:
    """Mean training seconds per epoch (validation excluded) over every epoch in ``metrics.jsonl``,
    so that a resumed run counts the epochs of its earlier processes too."""
    path = Path(out_dir) / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    seconds = [r["epoch_seconds"] for r in rows if "epoch_seconds" in r]
    return round(sum(seconds) / len(seconds), 3) if seconds else 0.0


class TrainData(Protocol):
    """Rows by index. Optional: ``lengths`` (length buckets), ``set_epoch(epoch)``, and
    ``epoch_batches(epoch, rank, world, batch_size) -> list[index tensor]``, this rank's batches of
    0-based ``epoch`` (a pure function of its arguments, so that a resumed run finds the same
    order), which replaces the ``DistributedSampler`` shuffle."""

    def __len__(self) -> int: ...
    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict: ...


class _LossModule(nn.Module):
    """Puts ``loss_fn`` behind ``forward`` so DDP's gradient hooks see the whole step."""

    def __init__(self, model: nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict, generator: torch.Generator | None):
        return self.loss_fn(self.model, batch, generator)


def _default_loss(model, batch, generator):
    return model.training_loss(batch, generator)


def amp_dtype(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype of training steps, or None for fp32. On CPU only with ``cpu_bf16``:
    bf16 matmuls pay off on CPUs with bf16 instructions (AVX512-BF16, AMX) and cost elsewhere."""
    if os.environ.get("USE_AMP", "1") == "0":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16 else None
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def rng_state(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.as_tensor(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "generator": generator.get_state(),
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["generator"])


def split_batch(batch: dict, rows: int) -> list[tuple[dict, float]]:
    """A batch dict cut into pieces of at most ``rows`` rows, each with its share of the batch's
    loss: its share of the target positions (``target > 0``) when the batch has targets, since
    the models' losses are means over those, else its share of the rows."""
    if rows <= 0:
        return [(batch, 1.0)]
    n = next((len(v) for v in batch.values() if torch.is_tensor(v)), None)
    if n is None:  # e.g. TriGRec stage 1: one batch per view, nested
        from core.errors import ConfigError

        raise ConfigError("training.micro_batch_size: this pipeline's batches cannot be split; set it to 0")
    if n <= rows:
        return [(batch, 1.0)]
    target = batch.get("target")
    counts = (target > 0).reshape(n, -1).sum(1).float() if torch.is_tensor(target) else torch.ones(n)
    total = float(counts.sum()) or 1.0
    pieces = []
    for start in range(0, n, rows):
        piece = {k: v[start:start + rows] if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in batch.items()}
        pieces.append((piece, float(counts[start:start + rows].sum()) / total))
    return pieces


def forward_backward(loss_module: nn.Module, batch: dict, generator, scaler, dtype, device: torch.device,
                     micro_batch_size: int = 0) -> tuple[float, dict]:
    """Loss and gradients of one optimizer step, ``micro_batch_size`` rows at a time when > 0
    (gradient accumulation: activations of one piece at a time; the same loss up to the
    negatives a sampled loss draws per piece). Returns (loss, detached parts to log)."""
    pieces = split_batch(batch, micro_batch_size)
    total, parts = 0.0, {}
    for i, (piece, weight) in enumerate(pieces):
        last = i == len(pieces) - 1
        # DDP averages gradients at every backward; only the last piece of a step needs it
        sync = loss_module.no_sync() if not last and hasattr(loss_module, "no_sync") else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_module(piece, generator)
            if isinstance(loss, dict):  # {"loss": tensor to optimise, other names: detached parts to log}
                for name, value in loss.items():
                    if name != "loss":
                        parts[name] = parts.get(name, 0.0) + weight * float(value)
                loss = loss["loss"]
            scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        total += weight * loss.item()
    return total, parts


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float
    best_valid: dict
    epochs_run: int
    seconds: float
    stopped: str
    threads: int = 1  # torch CPU threads the run trained with
    started: float = 0.0  # wall-clock (time.time()) start and end of the fit loop, for the run record
    ended: float = 0.0
    steps: int = 0  # optimizer steps of the whole run (a resumed run's earlier ones included in step mode)
    first_loss: float = math.nan  # step mode: the run's first step's loss (this rank's)
    last_loss: float = math.nan  # step mode: the mean loss of the last metrics line (over ranks)


def set_threads(threads: int) -> int:
    """Obey ``training.threads`` (0 = leave torch's default) and return the count in force, which
    every run records: a time figure means little without it."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def tensorboard_writer(out_dir: Path, purge_step: int, write: bool = True):
    """A TensorBoard ``SummaryWriter`` on the run folder (None when not ``write``: ranks other
    than 0 only check the import, so that every rank stops alike when the package is missing).
    Imported only when asked for: the package is optional. ``purge_step``: on resume, events a
    killed run wrote past its last checkpoint are dropped, as ``metrics.jsonl`` rows are."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from core.errors import ConfigError

        raise ConfigError("training.tensorboard=true needs the tensorboard package: install it "
                          "(pip install -r requirements.txt) or set training.tensorboard=false") from None
    return SummaryWriter(log_dir=str(out_dir), purge_step=purge_step) if write else None


def _log_tensorboard(writer, row: dict, key: str = "epoch") -> None:
    step = row[key]
    for name, value in row.items():
        if name == "valid":
            for metric, v in value.items():
                writer.add_scalar(f"valid/{metric}", v, step)
        elif name not in ("epoch", "step") and isinstance(value, (int, float)):
            writer.add_scalar(f"train/{name}", value, step)
    writer.flush()  # an epoch's numbers are visible at once, not after the writer's 2-minute flush


def _default_optimizer(loss_module: nn.Module, model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # the loss may own parameters (e.g. a distillation head): they train, but checkpoints
    # hold the recommender alone so it evaluates and serves without them. A model may ask for
    # a larger step on some of its parts with ``lr_scales = {"name.prefix.": factor}`` (e.g. an
    # adversarial discriminator that must keep up with the encoder it judges).
    scales = getattr(model, "lr_scales", {}) or {}
    groups: dict[tuple[bool, float], list] = {}
    for name, p in loss_module.named_parameters():
        local = name.removeprefix("model.")
        factor = next((f for prefix, f in scales.items() if local.startswith(prefix)), 1.0)
        groups.setdefault((p.ndim >= 2, factor), []).append(p)  # no decay on biases and LayerNorm
    return torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
                               "lr": cfg.learning_rate * factor}
                              for (decay, factor), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))],
                             lr=cfg.learning_rate, betas=(0.9, 0.98))


def _optimizer_step(loss_module, model, batch, generator, optimizer, scheduler, scaler, dtype, device,
                    cfg: TrainConfig, where: str) -> tuple[float, dict]:
    """One optimizer step on ``batch`` (the only place the loop steps): loss and gradients,
    clipping, the (scaled) optimizer step, the scheduler step. Returns (loss, parts to log)."""
    optimizer.zero_grad(set_to_none=True)
    loss, parts = forward_backward(loss_module, batch, generator, scaler, dtype, device, cfg.micro_batch_size)
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at {where}; lower the learning rate")
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss, parts


def _epoch_batches(train_data, epoch: int, rank: int, world: int, seed: int, cfg: TrainConfig) -> list:
    """This rank's batches (index tensors) of 0-based ``epoch``: the data's own ``epoch_batches``
    when it has one, else a ``DistributedSampler`` shuffle, length-bucketed when the data has
    ``lengths``; at most ``max_steps_per_epoch``. A pure function of its arguments."""
    cap = cfg.max_steps_per_epoch or None
    own = getattr(train_data, "epoch_batches", None)
    if own is not None:
        return list(own(epoch, rank, world, cfg.batch_size))[:cap]
    sampler = DistributedSampler(range(len(train_data)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = torch.as_tensor(list(sampler), dtype=torch.long)
    if cfg.length_buckets and hasattr(train_data, "lengths"):
        bucket_gen = torch.Generator().manual_seed(seed * 7919 + epoch * 31 + rank)
        return length_bucketed(order, train_data.lengths, cfg.batch_size, bucket_gen)[:cap]
    return list(order.split(cfg.batch_size))[:cap]


def fit(
    model: nn.Module,
    train_data: TrainData,
    validate: Callable[[nn.Module], dict] | None,
    cfg: TrainConfig,
    out_dir: Path | None,
    *,
    device: torch.device,
    seed: int,
    checkpoint_meta: dict,
    loss_fn: Callable = _default_loss,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    trained_only: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    unit: str = "rows",
    progress: bool = True,
) -> FitResult:
    """Train ``model`` on ``train_data`` and leave the best validation weights loaded.

    ``checkpoint_meta`` holds ``kind``, ``model_args``, ``config`` and ``data_fingerprint``
    for the self-describing checkpoints (see ``core.store.save_checkpoint``); a non-empty
    ``config`` is also written to ``config.yaml``.
    ``on_epoch_end(epoch, model)`` runs on every rank after each epoch, before ``last.pt`` is
    written (so a resumed run never skips it), e.g. to save periodic snapshots (epoch mode).
    ``validate=None``: no validation, no ``best.pt``, the last weights stay; ``out_dir=None``:
    no files. ``make_optimizer(loss_module)`` replaces the default AdamW (decay on matrices
    only, ``lr_scales``). ``trained_only``: checkpoints hold only the parameters that train
    (a fine-tuned top of a large frozen encoder); resuming checks that the same ones train.
    Step mode (``cfg.max_steps > 0``, see the module docstring): ``on_step(step, loss)`` runs on
    every rank after each step; ``unit`` names the rows in the throughput (``<unit>_per_s``);
    ``progress`` shows a step bar (rank 0).
    """
    rank, world, _ = dist_info()
    started = time.time()
    set_threads(cfg.threads)
    out_dir = Path(out_dir) if out_dir is not None else None
    model.to(device)
    generator = torch.Generator(device=device).manual_seed(seed * 1000 + rank)
    loss_module: nn.Module = _LossModule(model, loss_fn)
    loss_module.to(device)
    optimizer = make_optimizer(loss_module) if make_optimizer is not None else _default_optimizer(loss_module, model, cfg)
    steps_per_epoch = math.ceil(len(train_data) / world / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = cfg.max_steps if cfg.max_steps else max(1, steps_per_epoch * cfg.epochs)

    def lr_lambda(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine":
            progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    dtype = amp_dtype(device, cfg.amp, cfg.cpu_bf16)
    if dtype == torch.bfloat16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        log("warning: training.cpu_bf16: this CPU has no bf16 instructions (AVX512-BF16 / AMX), so bf16 "
            "autocast is emulated and several times slower than fp32; set training.cpu_bf16=false")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None)

    def model_state() -> dict:
        if trained_only:
            return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        return model.state_dict()

    def load_model_state(state: dict, path: Path) -> None:
        if trained_only:
            params = dict(model.named_parameters())
            if set(state) != {n for n, p in params.items() if p.requires_grad}:
                raise CheckpointError(f"{path}: trains other parameters than this run (other layers frozen); "
                                      "start a fresh run or use the same settings")
            with torch.no_grad():
                for name, value in state.items():
                    params[name].copy_(value)
            return
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit this model ({str(exc).splitlines()[0]}); "
                                  "start a fresh run or use the same model settings") from None

    step_mode = cfg.max_steps > 0
    start_epoch, best_metric, best_epoch, best_valid, bad_evals = 0, -math.inf, -1, {}, 0
    loop: dict = {}
    last_path = out_dir / "last.pt" if out_dir is not None else None
    best_path = out_dir / "best.pt" if out_dir is not None else None
    if cfg.resume and last_path is not None and last_path.is_file():
        ckpt = store.load_checkpoint(last_path, kind=checkpoint_meta["kind"],
                                     data_fingerprint=checkpoint_meta.get("data_fingerprint"), map_location=device)
        load_model_state(ckpt["model_state"], last_path)
        if isinstance(loss_fn, nn.Module) and "loss_state" in ckpt:
            loss_fn.load_state_dict(ckpt["loss_state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        loop = ckpt["loop"]
        start_epoch, best_metric, best_epoch, bad_evals = loop["epoch"], loop["best_metric"], loop["best_epoch"], loop["bad_evals"]
        best_valid = loop["best_valid"]
        set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0], generator)
        if step_mode:
            log(f"resumed from {last_path} at step {loop['step']}" + (
                f" (best {cfg.metric} {best_metric:.4f} at step {best_epoch})" if validate is not None else ""))
        else:
            log(f"resumed from {last_path} at epoch {start_epoch} (best {cfg.metric} {best_metric:.4f} at epoch {best_epoch})")
    elif cfg.resume and last_path is not None:
        log(f"resume requested but {last_path} does not exist; starting fresh")

    if is_main() and out_dir is not None:  # the run starts here (see prepare_out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(".*.tmp"):  # temp files of a writer that was killed (see store.atomic_path)
            stale.unlink(missing_ok=True)
        metrics = out_dir / "metrics.jsonl"
        if not cfg.resume:
            metrics.unlink(missing_ok=True)
            for old in out_dir.glob("events.out.tfevents.*"):  # an earlier run's TensorBoard events
                old.unlink(missing_ok=True)
        elif step_mode:
            truncate_log(metrics, loop.get("step", 0), key="step")
        else:
            truncate_log(metrics, start_epoch)
        if checkpoint_meta.get("config"):  # to_dict(cfg): the same text as core.config.save_config
            text = yaml.safe_dump(checkpoint_meta["config"], sort_keys=False, default_flow_style=None)
            store.atomic_write_text(out_dir / "config.yaml", text)
            from core.cli import is_verbose

            # one line: the file holds the whole resolved config; the dump itself only on request
            log(f"resolved config: {out_dir / 'config.yaml'}" + (
                ":\n  " + text.rstrip().replace("\n", "\n  ") if is_verbose() else " (--verbose prints it)"))
    tb = None
    if cfg.tensorboard and out_dir is not None:
        tb = tensorboard_writer(out_dir, (loop.get("step", 0) if step_mode else start_epoch) + 1, is_main())

    def run_validation(at: int, row: dict) -> bool:
        """Validate, record it in ``row`` and in the best/patience state; True when it improved."""
        nonlocal best_metric, best_epoch, best_valid, bad_evals
        model.eval()
        valid = validate(model)
        if cfg.metric not in valid:  # a name config load cannot know (each pipeline computes its own)
            from core.errors import ConfigError

            raise ConfigError(f"training.metric {cfg.metric!r} is not computed by this pipeline's validation; "
                              f"use one of {', '.join(sorted(valid))}")
        row["valid"] = {k: round(v, 6) for k, v in valid.items()}
        if valid[cfg.metric] > best_metric:
            best_metric, best_epoch, best_valid, bad_evals = valid[cfg.metric], at, valid, 0
            return True
        bad_evals += 1
        return False

    def write_row(row: dict, improved: bool, key: str) -> None:
        if is_main() and out_dir is not None:
            if improved:
                store.save_checkpoint(best_path, model_state=model_state(), **{key: row[key]},
                                      valid=best_valid, **checkpoint_meta)
            store.append_jsonl(out_dir / "metrics.jsonl", row)
            if tb is not None:
                _log_tensorboard(tb, row, key)

    def save_last(state: dict) -> None:
        # every rank saves its RNG state so a resumed DDP run draws the same numbers
        rng_states = gather_rng_states(rng_state(generator))
        if is_main() and out_dir is not None and cfg.save_checkpoints:
            store.save_checkpoint(
                last_path, model_state=model_state(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=rng_states,
                **({"loss_state": loss_fn.state_dict()} if isinstance(loss_fn, nn.Module) else {}),
                loop={**state, "best_metric": best_metric, "best_epoch": best_epoch,
                      "bad_evals": bad_evals, "best_valid": best_valid},
                **checkpoint_meta)

    def set_epoch_hooks(epoch: int) -> None:
        # staged recipes (e.g. distil, then fine-tune on other sequences) switch here
        hooks = [getattr(train_data, "set_epoch", None), getattr(loss_fn, "set_epoch", None)]
        # and every module of the model that has one (a staged loss in an encoder nested in a pipeline's model)
        hooks += [module.set_epoch for module in model.modules() if callable(getattr(module, "set_epoch", None))]
        for hook in hooks:
            if hook is not None:
                hook(epoch + 1)

    def budget_spent() -> bool:
        spent = bool(cfg.time_budget_s) and time.perf_counter() - t_start >= cfg.time_budget_s
        if world > 1 and cfg.time_budget_s:  # ranks' clocks differ: all follow rank 0 (validation is collective)
            spent = _from_rank0(spent)
        return spent

    after_step = kill_hook()
    t_start = time.perf_counter()
    stopped = "epochs"
    epoch = start_epoch
    steps = 0
    first_loss, last_loss = math.nan, math.nan
    def run_steps() -> tuple:
        """The step-mode loop of ``fit`` (see the module docstring); returns
        (stopped, epoch index, steps, first loss, last loss)."""
        total = cfg.max_steps
        step, skip = loop.get("step", 0), loop.get("batch", 0)
        first_loss = loop.get("first_loss")
        window, window_n, last_loss = loop.get("window", 0.0), loop.get("window_n", 0), loop.get("last_loss", math.nan)
        window_parts, window_rows = dict(loop.get("window_parts", {})), loop.get("window_rows", 0)
        start_step, epoch, stopped = step, start_epoch, f"max_steps {total}"
        t_window = t_step = t_start
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (progress and is_main()), leave=False,
                   dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 60.0)  # a log file: a line a minute
        done = step >= total
        while not done:
            model.train()
            set_epoch_hooks(epoch)
            batches = _epoch_batches(train_data, epoch, rank, world, seed, cfg)
            if not batches:
                raise ValueError("step mode: an epoch without batches (no training rows)")
            for b in range(skip, len(batches)):
                batch = train_data.get_batch(batches[b].to(device), generator)
                value, parts = _optimizer_step(loss_module, model, batch, generator, optimizer, scheduler, scaler, dtype,
                                               device, cfg, f"step {step + 1}")
                step += 1
                first_loss = value if first_loss is None else first_loss
                window, window_n, window_rows = window + value, window_n + 1, window_rows + len(batches[b])
                for name, v in parts.items():
                    window_parts[name] = window_parts.get(name, 0.0) + v
                step_s = time.perf_counter() - t_step
                t_step = time.perf_counter()
                bar.set_postfix(loss=f"{value:.4f}", s_per_step=f"{step_s:.1f}", refresh=False)  # shown by update
                bar.update(1)
                if step == start_step + 1 and step < total:  # a first sign of life (and the pace) in any log
                    log(f"step {step}/{total} took {step_s:.1f}s (loss {value:.4f}); "
                        f"about {step_s * (total - step) / 60:.1f} min to go")
                if on_step is not None:
                    on_step(step, value)
                out_of_time = budget_spent()
                last = step >= total or out_of_time
                validated = validate is not None and (last or bool(cfg.eval_every_steps and step % cfg.eval_every_steps == 0))
                if last or validated or (cfg.log_every_steps and step % cfg.log_every_steps == 0):
                    now = time.perf_counter()
                    last_loss = all_reduce_mean(window / window_n, device)  # every rank logs at the same steps
                    row = {"step": step, "epoch": epoch + 1, "loss": round(last_loss, 6),
                           **{n: round(all_reduce_mean(v / window_n, device), 6) for n, v in sorted(window_parts.items())},
                           "lr": scheduler.get_last_lr()[0],
                           f"{unit}_per_s": round(window_rows * world / max(now - t_window, 1e-9), 2),
                           "seconds": round(now - t_start, 3)}
                    improved = run_validation(step, row) if validated else False
                    write_row(row, improved, "step")
                    valid_txt = f" | valid {cfg.metric} {row['valid'][cfg.metric]:.4f}" if "valid" in row else ""
                    parts_txt = "".join(f" {n} {row[n]:.4f}" for n in sorted(window_parts))
                    log(f"step {step:5d}/{total} loss {last_loss:.4f}{parts_txt}{valid_txt} | "
                        f"{row[f'{unit}_per_s']:.1f} {unit}/s" + (" *" if improved else ""))
                    window, window_n, window_rows, window_parts, t_window = 0.0, 0, 0, {}, time.perf_counter()
                    if validated:
                        model.train()
                if out_dir is not None and cfg.save_every_steps and step % cfg.save_every_steps == 0 and not last:
                    save_last({"step": step, "epoch": epoch, "batch": b + 1, "first_loss": first_loss,
                               "window": window, "window_n": window_n, "window_rows": window_rows,
                               "window_parts": window_parts, "last_loss": last_loss})
                    barrier()
                after_step()
                if cfg.patience and bad_evals >= cfg.patience:
                    stopped, done = f"early stop: no {cfg.metric} gain in {cfg.patience} evaluations", True
                elif out_of_time:
                    stopped, done = f"time budget {cfg.time_budget_s:.0f}s reached", True
                done = done or step >= total
                if done:
                    break
            if not done:
                skip, epoch = 0, epoch + 1
        bar.close()
        return stopped, epoch, step, math.nan if first_loss is None else first_loss, last_loss

    if step_mode:
        stopped, epoch, steps, first_loss, last_loss = run_steps()
    for epoch in range(start_epoch, cfg.epochs if not step_mode else start_epoch):
        t_epoch = time.perf_counter()
        model.train()
        set_epoch_hooks(epoch)
        batches = _epoch_batches(train_data, epoch, rank, world, seed, cfg)
        total, count, parts = 0.0, 0, {}
        bar = tqdm(batches, desc=f"epoch {epoch + 1}", leave=False,
                   disable=not (progress and is_main()) or len(batches) < 20,
                   dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 60.0)  # quiet in log files
        for index in bar:
            batch = train_data.get_batch(index.to(device), generator)
            loss, step_parts = _optimizer_step(loss_module, model, batch, generator, optimizer, scheduler, scaler,
                                               dtype, device, cfg, f"epoch {epoch + 1}")
            for name, value in step_parts.items():
                parts[name] = parts.get(name, 0.0) + value
            after_step()
            if on_step is not None:
                on_step(steps + 1, loss)
            total += loss
            count += 1
            steps += 1
            if count % 10 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        train_loss = all_reduce_mean(total / max(count, 1), device)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
               **{name: round(all_reduce_mean(v / max(count, 1), device), 6) for name, v in sorted(parts.items())},
               "lr": scheduler.get_last_lr()[0], "epoch_seconds": round(time.perf_counter() - t_epoch, 3)}
        # a run that stops on its time budget stops here: validate this epoch even when eval_every
        # would skip it, or its training would count neither for best.pt nor for the test metrics
        out_of_time = budget_spent()
        validated = validate is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs or out_of_time)
        improved = run_validation(epoch + 1, row) if validated else False
        row["seconds"] = round(time.perf_counter() - t_start, 3)
        write_row(row, improved, "epoch")
        valid_txt = f" | valid {cfg.metric} {row['valid'][cfg.metric]:.4f}" if "valid" in row else ""
        hr = row.get("valid", {}).get(cfg.metric.replace("NDCG", "HR"))
        valid_txt += f" {cfg.metric.replace('NDCG', 'HR')} {hr:.4f}" if hr is not None and "NDCG" in cfg.metric else ""
        parts_txt = "".join(f" {name} {row[name]:.4f}" for name in sorted(parts))
        log(f"epoch {epoch + 1:3d}/{cfg.epochs} loss {train_loss:.4f}{parts_txt}{valid_txt} | {row['epoch_seconds']:.1f}s"
            + (" *" if improved else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, model)
        save_last({"epoch": epoch + 1})
        barrier()
        if cfg.patience and bad_evals >= cfg.patience:
            stopped = f"early stop: no {cfg.metric} gain in {cfg.patience} evaluations"
            break
        # the budget may also run out while validating or saving; stop then only on a validated
        # epoch (otherwise the next epoch runs and is validated)
        spent = budget_spent()
        if out_of_time or (validated and spent):
            stopped = f"time budget {cfg.time_budget_s:.0f}s reached"
            break
    if tb is not None:
        tb.close()
    seconds = time.perf_counter() - t_start
    # rank 0 wrote best.pt; on a multi-node run other nodes may not see that file, so every rank
    # follows rank 0's decision and, when distributed, takes the weights by broadcast
    has_best = validate is not None and best_path is not None and (
        _from_rank0(best_path.is_file()) if world > 1 else best_path.is_file())
    if has_best:
        barrier()
        if is_main():
            ckpt = store.load_checkpoint(best_path, kind=checkpoint_meta["kind"], map_location=device)
            if trained_only:
                load_model_state(ckpt["model_state"], best_path)
            else:
                model.load_state_dict(ckpt["model_state"])
        if world > 1:
            import torch.distributed as dist

            for t in model.state_dict().values():
                dist.broadcast(t, 0)
    if validate is not None:
        at = "step" if step_mode else "epoch"
        log(f"best {cfg.metric} {best_metric:.4f} at {at} {best_epoch} ({stopped}; {seconds:.1f}s)")
    return FitResult(best_epoch, best_metric, best_valid, epoch + 1, seconds, stopped, torch.get_num_threads(),
                     started, time.time(), steps, first_loss, last_loss)


def _from_rank0(value):
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, 0)
    return box[0]


def truncate_log(path: Path, last: int, key: str = "epoch") -> None:
    """Keep the JSON rows of ``path`` with ``row[key] <= last`` (rank 0, on resume): rows that a
    killed run wrote after its last checkpoint, or cut short, would otherwise appear twice."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a row cut short by the kill
            continue
        if isinstance(row, dict) and row.get(key, 0) <= last:
            keep.append(line + "\n")
    store.atomic_write_text(path, "".join(keep))


def gather_rng_states(state: dict) -> list:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states

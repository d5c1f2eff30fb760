"""Baselines scored exactly like the universal model: the same data, temporal hold-out and evaluator.

    from universal.baselines import MFSettings, holdout, popularity, train_mf
    split = holdout(cfg, "data.json")            # the pipeline's split and HoldoutEvaluators
    pop = popularity(split)                      # {"valid": metrics, "test": metrics}
    report = train_mf(split, MFSettings(dim=64), out_dir, seed=1, metric="NDCG@10")

- ``holdout``: ``load_dataset`` -> ``subsample_users`` -> ``temporal_holdout`` -> one evaluator per
  held-out part, with the config's ``data.*`` and ``eval.*`` settings, as ``Pipeline.fit`` does.
- ``popularity``: training-interaction counts (``evaluate.popularity_score_fn``).
- ``train_mf``: BPR matrix factorization (a user and an item vector, an item bias; each training
  interaction against ``negatives`` items the user has not interacted with in training, sampled as
  the pipeline samples them) trained with ``core.train.fit``: the epoch is chosen on validation and
  test is scored once, with the best weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import store
from core.train import TrainConfig, fit
from universal.data import BUILTIN_TYPES, Dataset, load_dataset, subsample_users
from universal.evaluate import TRAIN, HoldoutEvaluator, popularity_score_fn, temporal_holdout


@dataclass
class Holdout:
    data: Dataset
    part: np.ndarray  # per interaction row: 0 train, 1 validation, 2 test
    evals: dict[str, HoldoutEvaluator]  # "valid", "test"


def holdout(cfg, data_path: str | Path | Dataset, device: torch.device | str = "cpu") -> Holdout:
    """The universal pipeline's data, split and evaluators for ``cfg`` (a ``UniversalConfig``)."""
    data = data_path if isinstance(data_path, Dataset) else \
        load_dataset(data_path, BUILTIN_TYPES + tuple(cfg.custom_encoders))
    data = subsample_users(data, cfg.data.max_users, cfg.data.sample_seed)
    part = temporal_holdout(data, cfg.data.train_split, cfg.data.min_interactions)
    e = cfg.eval
    evals = {which: HoldoutEvaluator(data, part, code, e.ks, e.auc_negatives, e.sample_seed, e.batch_size, device)
             for which, code in (("valid", 1), ("test", 2))}
    return Holdout(data, part, evals)


def popularity(split: Holdout) -> dict[str, dict]:
    score = popularity_score_fn(split.data, split.part)
    return {which: ev.run(score) for which, ev in split.evals.items()}


@dataclass(frozen=True)
class MFSettings:
    dim: int = 64
    epochs: int = 50
    batch_size: int = 1024
    learning_rate: float = 5e-3
    negatives: int = 1  # sampled negatives per training interaction (BPR pairs)
    reg: float = 1e-4  # L2 on the batch's user / item vectors
    patience: int = 5  # validations without improvement before stopping


class MatrixFactorization(nn.Module):
    """``core.models.base.Recommender``: scoring inputs are user rows (1-based)."""

    kind = "universal-mf"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, reg: float = 1e-4) -> None:
        super().__init__()
        self.model_args = dict(n_users=n_users, n_items=n_items, dim=dim, reg=reg)
        self.user = nn.Embedding(n_users + 1, dim)
        self.item = nn.Embedding(n_items + 1, dim)
        self.bias = nn.Embedding(n_items + 1, 1)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.zeros_(self.bias.weight)
        self.reg = reg

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        u, p, n = self.user(batch["user"]), self.item(batch["pos"]), self.item(batch["neg"])  # n: [B, k, D]
        pos = (u * p).sum(-1, keepdim=True) + self.bias(batch["pos"]).squeeze(-1).unsqueeze(-1)
        neg = (u.unsqueeze(1) * n).sum(-1) + self.bias(batch["neg"]).squeeze(-1)
        bpr = F.softplus(neg - pos).mean()
        l2 = u.pow(2).sum(-1).mean() + p.pow(2).sum(-1).mean() + n.pow(2).sum(-1).mean()
        return {"loss": bpr + self.reg * l2, "bpr": bpr.detach()}

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        s = self.user(users) @ self.item.weight.T + self.bias.weight.squeeze(-1)
        s[:, 0] = float("-inf")
        return s

    def candidate_scores(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return (self.user(users).unsqueeze(1) * self.item(candidates)).sum(-1) + self.bias(candidates).squeeze(-1)

    def score_fn(self):
        """The evaluator's scoring function (user rows as numpy)."""
        return lambda users: self.full_scores(torch.as_tensor(users, device=self.item.weight.device))


class MFRows:
    """Training interactions as ``core.train.fit`` rows: (user, positive, sampled negatives)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, negatives: int, device) -> None:
        from universal.pipeline import PairKeys

        self.users = torch.as_tensor(users, device=device)
        self.items = torch.as_tensor(items, device=device)
        self.n_items, self.k = n_items, negatives
        self.seen = PairKeys(self.users, self.items, n_items)

    def __len__(self) -> int:
        return len(self.users)

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        from universal.pipeline import sample_negatives

        u, i = self.users[index], self.items[index]
        return {"user": u, "pos": i, "neg": sample_negatives(u, self.k, self.seen, self.n_items, generator)}


def train_mf(split: Holdout, settings: MFSettings, out_dir: str | Path, *, seed: int = 42,
             metric: str = "NDCG@10", device: torch.device | str = "cpu", log=print) -> dict:
    """Train BPR-MF on the split's training rows; epoch chosen on validation, test scored once."""
    from core.cli import seed_everything

    device = torch.device(device)
    seed_everything(seed)
    data, train = split.data, split.part == TRAIN
    model = MatrixFactorization(data.n_users, data.n_items, settings.dim, settings.reg).to(device)
    rows = MFRows(data.user_idx[train], data.item_idx[train], data.n_items, settings.negatives, device)
    tcfg = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                       grad_clip=0.0, patience=settings.patience, metric=metric, length_buckets=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    meta = {"kind": MatrixFactorization.kind, "config": {"mf": asdict(settings), "seed": seed},
            "model_args": {"n_users": data.n_users, "n_items": data.n_items, "dim": settings.dim, "reg": settings.reg},
            "data_fingerprint": store.fingerprint_arrays(data.user_idx, data.item_idx, split.part)}
    result = fit(model, rows, lambda m: split.evals["valid"].run(m.score_fn()), tcfg, out, device=device, seed=seed,
                 checkpoint_meta=meta, log=log)
    model.eval()
    test = split.evals["test"].run(model.score_fn())
    return {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped": result.stopped,
            "train_seconds": round(result.seconds, 2), "threads": result.threads, "valid": result.best_valid, "test": test,
            "settings": asdict(settings), "run_dir": str(out)}

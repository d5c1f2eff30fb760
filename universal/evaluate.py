"""Per-user temporal hold-out and the evaluation of a scoring function on it.

Split: each user's interactions in time order (file order breaks ties); users with at least
``min_interactions`` hold out their last ``max(2, round(n * (1 - train_split)))`` (at most
n - 1): the earlier half (rounded down) is validation, the rest test. Users with fewer
interactions train on all of them.

Metrics (``core.metrics``), per user with held-out items, averaged over users:
HR / Recall / NDCG / Precision @K and MRR under full ranking over every item, the user's
known items excluded (training items for validation; training + validation items for test);
AUC of held-out positives against ``auc_negatives`` items per user that the user never
interacted with, drawn once with a fixed seed (ties count one half).

Issue 9's goal, the model against the baselines: ``versus_baselines``; a feature ablation's
effect over seeds: ``seed_differences``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from core.metrics import MetricAccumulator, list_metrics, sample_std
from universal.data import Dataset

TRAIN, VALID, TEST = 0, 1, 2
ScoreFn = Callable[[np.ndarray], torch.Tensor]
"""user rows [B] -> scores [B, n_items + 1] (column 0 is never a real item)."""


def temporal_holdout(data: Dataset, train_split: float, min_interactions: int = 3) -> np.ndarray:
    """Part of every interaction row: 0 train, 1 validation, 2 test."""
    n = len(data.user_idx)
    order = np.lexsort((np.arange(n), data.time, data.user_idx))
    users = data.user_idx[order]
    counts = np.bincount(data.user_idx, minlength=data.n_users + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[users]
    cnt = counts[users]
    hold = np.where(cnt >= min_interactions, np.clip(np.rint(cnt * (1 - train_split)), 2, cnt - 1), 0).astype(np.int64)
    n_test = hold - hold // 2
    part_sorted = np.where(rank >= cnt - n_test, TEST, np.where(rank >= cnt - hold, VALID, TRAIN))
    part = np.empty(n, np.int64)
    part[order] = part_sorted
    return part


def pairs_by_user(users: np.ndarray, items: np.ndarray) -> dict[int, set]:
    out: dict[int, set] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        out.setdefault(u, set()).add(i)
    return out


class HoldoutEvaluator:
    def __init__(self, data: Dataset, part: np.ndarray, which: int, ks=(5, 10, 20), auc_negatives: int = 100,
                 seed: int = 0, batch_size: int = 512, device: torch.device | str = "cpu") -> None:
        self.ks, self.batch_size, self.device = list(ks), batch_size, torch.device(device)
        self.n_items = data.n_items
        rows = part == which
        targets = pairs_by_user(data.user_idx[rows], data.item_idx[rows])
        known = pairs_by_user(data.user_idx[part < which], data.item_idx[part < which])
        every = pairs_by_user(data.user_idx, data.item_idx)
        self.users = np.array(sorted(targets), dtype=np.int64)
        width = max((len(t) for t in targets.values()), default=1)
        self.targets = torch.zeros(len(self.users), width, dtype=torch.long)
        self.known = [torch.as_tensor(sorted(known.get(int(u), ())), dtype=torch.long) for u in self.users]
        rng = np.random.default_rng(seed)
        self.negatives = torch.zeros(len(self.users), max(1, auc_negatives), dtype=torch.long)
        for r, u in enumerate(self.users.tolist()):
            t = sorted(targets[u])
            self.targets[r, :len(t)] = torch.as_tensor(t)
            pool = np.setdiff1d(np.arange(1, data.n_items + 1), np.fromiter(every[u], np.int64))
            take = rng.choice(pool, min(auc_negatives, len(pool)), replace=False) if len(pool) else []
            self.negatives[r, :len(take)] = torch.as_tensor(np.sort(take), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.users)

    @torch.no_grad()
    def run(self, score_fn: ScoreFn) -> dict[str, float]:
        acc = MetricAccumulator()
        wins, pairs = 0.0, 0
        kmax = min(max(self.ks), self.n_items)
        for start in range(0, len(self.users), self.batch_size):
            sl = slice(start, start + self.batch_size)
            scores = score_fn(self.users[sl]).float().to(self.device).clone()
            targets = self.targets[sl].to(self.device)
            # AUC before masking: held-out positives against never-interacted negatives
            pos = scores.gather(1, targets)
            neg = scores.gather(1, self.negatives[sl].to(self.device))
            valid = (targets > 0).unsqueeze(2) & (self.negatives[sl].to(self.device) > 0).unsqueeze(1)
            diff = pos.unsqueeze(2) - neg.unsqueeze(1)
            wins += float((((diff > 0).float() + 0.5 * (diff == 0).float()) * valid).sum())
            pairs += int(valid.sum())
            # full ranking without the user's known items
            scores[:, 0] = float("-inf")
            for r, known in enumerate(self.known[sl]):
                scores[r, known.to(self.device)] = float("-inf")
            top = scores.topk(kmax, dim=1).indices
            hits = (top.unsqueeze(2) == targets.unsqueeze(1)).any(2) & torch.isfinite(scores.gather(1, top))
            acc.add(list_metrics(hits.cpu(), (targets > 0).sum(1).cpu(), self.ks))
        out = acc.result()
        out["AUC"] = wins / pairs if pairs else 0.5  # no user has an item left to be a negative
        return out


def popularity_score_fn(data: Dataset, part: np.ndarray) -> ScoreFn:
    """Training popularity as a score, ties broken by item order (never by a tie in the ranking)."""
    counts = np.bincount(data.item_idx[part == TRAIN], minlength=data.n_items + 1)[1:]
    order = np.argsort(-counts, kind="stable") + 1
    ranked = torch.zeros(data.n_items + 1)
    ranked[order] = torch.arange(len(order), 0, -1, dtype=torch.float32)
    return lambda users: ranked.expand(len(users), -1)


def auc_protocol(ev: HoldoutEvaluator) -> tuple[str, dict]:
    """The name of ``ev``'s AUC protocol and the spread of its negatives per user:
    ``sampled-N`` when every user got the ``N`` it asks for, ``all-unseen`` when none did (each
    user's AUC then uses all their never-interacted items), else ``sampled-upto-N``."""
    counts = (ev.negatives > 0).sum(1).numpy()
    want = ev.negatives.shape[1]
    info = {"auc_negatives_min": int(counts.min()), "auc_negatives_mean": round(float(counts.mean()), 2),
            "auc_negatives_max": int(counts.max())}
    if counts.min() == want:
        return f"sampled-{want}", info
    if counts.max() < want:
        return "all-unseen", info
    return f"sampled-upto-{want}", info


def versus_baselines(value: float, baselines: dict[str, float | None]) -> tuple[str, str]:
    """Issue 9's goal for a model's test NDCG@10 against the baselines' (name -> value, None: not
    run): the comparisons as text (``beats popularity (0.1344 vs 0.0825); ...``; a baseline at 1.0
    is ``at the ceiling``) and the goal: ``met`` when the model beats every baseline, ``NOT met``
    when it does not, ``open`` while a baseline is not run."""
    parts = []
    for name, base in baselines.items():
        if base is None:
            parts.append(f"{name} not run")
            continue
        word = "beats" if value > base else "ties" if value == base else "does NOT beat"
        parts.append(f"{word} {name} ({value:.4f} vs {base:.4f}{', at the ceiling' if base >= 0.9995 else ''})")
    ran = [base for base in baselines.values() if base is not None]
    return "; ".join(parts), "open" if len(ran) < len(baselines) else "met" if value > max(ran) else "NOT met"


def seed_differences(base: dict, other: dict) -> str:
    """``other`` minus ``base`` over the seeds both ran (``{seed: value}`` each), as text: the mean
    and sample std of the per-seed differences (``+0.0134 ± 0.0221 (3 seeds)``; no std for one
    seed); '' when they share no seed."""
    diffs = [other[seed] - base[seed] for seed in sorted(set(base) & set(other))]
    if not diffs:
        return ""
    n = len(diffs)
    return f"{np.mean(diffs):+.4f}" + (f" ± {sample_std(diffs):.4f} ({n} seeds)" if n > 1 else " (1 seed)")

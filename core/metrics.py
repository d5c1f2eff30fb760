"""Top-K ranking metrics: HR, Recall, NDCG, MRR, Precision.

Three protocols share the same formulas:

- full ranking: score every item, mask the user's history (the target itself stays), and
  rank the target among all remaining items (``ranks_from_scores``);
- sampled ranking: rank the target among N sampled negatives (``sample_negatives`` with a
  fixed seed; papers use N = 100 or 999);
- candidate lists: a ranked list per user and a set of ground-truth items (``list_metrics``);
  an item counts at its first position only (``first_hits``), so Recall and NDCG stay <= 1.

Two models are compared over the same users with ``seed_averaged_paired`` (per-user NDCG from
``ndcg_by_id``, averaged over seeds, then Wilcoxon signed-rank and paired t), over the seeds
both ran with ``paired_over_seeds``; ``ratio_over_seeds`` compares their per-seed figures
(a gain, a time ratio) over those seeds only.

Ties are broken pessimistically (the target is ranked below every item with an equal
score), so a model that scores everything equally gets the worst rank, not the best.
Everything is vectorised over users with torch; nothing loops over users in Python.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch

METRIC_NAMES = ("HR", "Recall", "NDCG", "Precision")


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each row's target among the non-excluded columns.

    scores: [B, N] float; targets: [B] column index of the positive; exclude: [B, N] bool of
    columns to drop (history, padding). The target column is never excluded.
    """
    target_scores = scores.gather(1, targets.view(-1, 1))
    ahead = scores >= target_scores  # pessimistic: equal scores count as ahead
    if exclude is not None:
        ahead.masked_fill_(exclude, False)
    # the target itself is counted once by ">=" and is not excluded: subtract it
    ahead.scatter_(1, targets.view(-1, 1), False)
    return ahead.sum(dim=1, dtype=torch.int32)  # int32: half the time of the default int64 sum


def rank_metrics(ranks: torch.Tensor | np.ndarray, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user metrics for one relevant item at 0-based ``ranks``; returns ``{name@K: [B]}``.

    With a single target Recall@K equals HR@K and Precision@K is HR@K / K.
    MRR is the untruncated reciprocal rank.
    """
    ranks = torch.as_tensor(ranks).to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = (ranks < k).to(torch.float64)
        out[f"HR@{k}"] = hit
        out[f"Recall@{k}"] = hit
        out[f"NDCG@{k}"] = hit / torch.log2(ranks + 2.0)
        out[f"Precision@{k}"] = hit / k
    out["MRR"] = 1.0 / (ranks + 1.0)
    return out


def first_hits(ranked: Sequence, relevant) -> list[float]:
    """0/1 per position of ``ranked``: 1 where a relevant item appears for the first time.

    A repeated item and a placeholder (None) are misses in their slot: counting a relevant
    item once per copy would push Recall and NDCG above 1 (``[a, a, a]`` vs ``{a}``: Recall 3).
    """
    seen: set = set()
    out = []
    for item in ranked:
        hit = item is not None and item in relevant and item not in seen
        if hit:
            seen.add(item)
        out.append(1.0 if hit else 0.0)
    return out


def list_metrics(hits: torch.Tensor | np.ndarray, n_relevant: torch.Tensor | np.ndarray, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user metrics from a ranked list.

    hits: [B, L] 0/1, ``hits[u, j] = 1`` when the j-th recommended item of user u is relevant;
    n_relevant: [B] number of relevant items of each user (for Recall and ideal DCG).
    Lists shorter than K count as padded with misses.
    """
    hits = torch.as_tensor(hits).to(torch.float64)
    n_rel = torch.as_tensor(n_relevant).to(torch.float64)
    if hits.ndim != 2 or n_rel.shape[0] != hits.shape[0]:
        raise ValueError("hits must be [B, L] and n_relevant [B]")
    over = hits.sum(1) > n_rel
    if bool(over.any()):
        # more hits than relevant items can only come from a list that repeats an item
        row = int(over.nonzero()[0])
        raise ValueError(f"row {row}: {int(hits[row].sum())} hits but {int(n_rel[row])} relevant items; a ranked list "
                         "repeats an item: count each item at its first position (core.metrics.first_hits)")
    length = hits.shape[1]
    discounts = 1.0 / torch.log2(torch.arange(2, length + 2, dtype=torch.float64))
    out: dict[str, torch.Tensor] = {}
    safe_rel = n_rel.clamp(min=1)
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        dcg = (h * discounts[: h.shape[1]]).sum(1)
        ideal_n = torch.minimum(n_rel, torch.tensor(float(k), dtype=torch.float64)).long()
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64)), 0)])
        idcg = cum[ideal_n]
        out[f"HR@{k}"] = (n_hit > 0).to(torch.float64)
        out[f"Recall@{k}"] = n_hit / safe_rel
        out[f"NDCG@{k}"] = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))
        out[f"Precision@{k}"] = n_hit / k
    first = torch.where(hits.sum(1) > 0, hits.argmax(1).to(torch.float64) + 1.0, torch.full_like(n_rel, math.inf))
    out["MRR"] = 1.0 / first
    return out


class MetricAccumulator:
    """Sums per-user metrics over batches (and across ranks), then averages."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, per_user: dict[str, torch.Tensor]) -> None:
        n = None
        for name, values in per_user.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
            n = len(values)
        self.count += n or 0

    def all_reduce(self) -> None:
        """Sum the partial results of all torchrun ranks (no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        names = sorted(self.sums)
        t = torch.tensor([self.sums[n] for n in names] + [float(self.count)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        t = t.cpu()
        self.sums = {n: float(v) for n, v in zip(names, t[:-1])}
        self.count = int(t[-1])

    def result(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        return {name: s / self.count for name, s in self.sums.items()}


def sample_negatives(
    exclude: torch.Tensor,
    n_items: int,
    num: int,
    generator: torch.Generator,
    popularity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw ``num`` distinct negatives per row from items 1..n_items, none in ``exclude``.

    exclude: [B, N+1] bool over item indexes (column 0 = padding is always excluded).
    Uniform by default; with ``popularity`` ([N+1] weights) items are drawn in proportion to
    it (Gumbel top-k). Deterministic for a given generator state.
    """
    batch = exclude.shape[0]
    available = (~exclude[:, 1:]).sum(1)
    if int(available.min()) < num:
        raise ValueError(f"a user has only {int(available.min())} items left to sample {num} negatives from")
    keys = torch.rand(batch, n_items + 1, generator=generator, device=exclude.device)
    if popularity is not None:
        # Gumbel top-k: argmax of log w + Gumbel noise samples without replacement ~ w
        gumbel = -torch.log(-torch.log(keys.clamp(1e-12, 1 - 1e-12)))
        keys = torch.log(popularity.to(keys).clamp(min=1e-12)) + gumbel
    keys = keys.masked_fill(exclude, -math.inf)
    keys[:, 0] = -math.inf
    return keys.topk(num, dim=1).indices


def ndcg_by_id(ids, ranks, k: int = 10) -> dict:
    """{id: NDCG@k} from 0-based ranks of one target each (``rank_metrics``)."""
    return dict(zip(np.asarray(ids).tolist(), rank_metrics(np.asarray(ranks), [k])[f"NDCG@{k}"].tolist()))


def seed_averaged_paired(base_runs: list[dict], other_runs: list[dict]) -> dict:
    """Paired comparison of two models, one {id: value} per seed and model: over the ids every
    run scored, each id's value averaged over the seeds, then Wilcoxon signed-rank and paired t
    (``other`` minus ``base``). Returns ``users``, ``mean_diff``, ``t_p`` and ``wilcoxon_p`` (1.0
    when the two never differ)."""
    from scipy import stats

    ids = sorted(set.intersection(*(set(r) for r in base_runs + other_runs)))
    x = np.mean([[r[i] for i in ids] for r in base_runs], axis=0)
    y = np.mean([[r[i] for i in ids] for r in other_runs], axis=0)
    diff = y - x
    return {"users": len(ids), "mean_diff": float(diff.mean()),
            "t_p": float(stats.ttest_rel(y, x).pvalue) if diff.any() else 1.0,
            "wilcoxon_p": float(stats.wilcoxon(y, x, zero_method="wilcox").pvalue) if np.count_nonzero(diff) else 1.0}


def sample_std(values) -> float:
    """Sample standard deviation (ddof 1) of per-seed values; 0.0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def shared_seeds(*by_seed: dict) -> list:
    """The seeds (keys) that every ``{seed: value}`` of ``by_seed`` holds with a value other than None, sorted."""
    return sorted(s for s in set.intersection(*(set(d) for d in by_seed)) if all(d[s] is not None for d in by_seed))


def paired_over_seeds(base: dict, other: dict) -> dict:
    """``seed_averaged_paired`` of two models given as ``{seed: {id: value} or None}``, over the
    ``seeds`` both have, with each seed's ``per_seed_diff`` (the mean over its ids of ``other``
    minus that of ``base``); {} when they share no seed."""
    seeds = shared_seeds(base, other)
    if not seeds:
        return {}
    test = seed_averaged_paired([base[s] for s in seeds], [other[s] for s in seeds])
    per_seed = [float(np.mean(list(other[s].values())) - np.mean(list(base[s].values()))) for s in seeds]
    return {**test, "seeds": seeds, "per_seed_diff": per_seed}


def ratio_over_seeds(base: dict, other: dict) -> tuple[float, list, list] | None:
    """``other``'s mean over the seeds both ``{seed: value}`` have divided by ``base``'s: (that
    ratio, the seeds, each seed's own ratio); None when they share no seed. A model run on fewer
    seeds is so never compared with the other's mean over seeds it lacks."""
    seeds = shared_seeds(base, other)
    if not seeds:
        return None
    ratio = np.mean([other[s] for s in seeds]) / np.mean([base[s] for s in seeds])
    return ratio, seeds, [other[s] / base[s] for s in seeds]


def summarize(results: dict[str, float], ks: Iterable[int] = (10,), names: Iterable[str] = ("HR", "NDCG")) -> str:
    return "  ".join(f"{n}@{k} {results[f'{n}@{k}']:.4f}" for k in ks for n in names if f"{n}@{k}" in results)

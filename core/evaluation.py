"""Batched evaluation of a scoring function on a validation or test split.

``Evaluator`` prepares everything that does not depend on the model once (padded history
inputs, targets, the fixed-seed sampled negatives) and then scores users in batches:
full ranking over all items with the user's history masked, plus the sampled protocols.
Under torchrun each rank scores a disjoint shard of users and the sums are all-reduced.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from core.data.batches import trim_padding
from core.data.splits import EvalSplit, Split, history_mask, padded_prefixes
from core.dist import dist_info
from core.metrics import MetricAccumulator, rank_metrics, ranks_from_scores, sample_negatives

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(padded history [B, W], user indexes [B]) -> scores [B, n_items + 1]."""


def sampled_key(n: int, metric: str) -> str:
    return f"sampled-{n}/{metric}"


class Evaluator:
    def __init__(
        self,
        split: Split,
        which: str,
        width: int,
        ks: Sequence[int] = (5, 10, 20),
        sampled: Sequence[int] = (100,),
        sample_seed: int = 0,
        batch_size: int = 1024,
        device: torch.device | str = "cpu",
        max_users: int = 0,
        token_budget: int = 1 << 16,
    ) -> None:
        part: EvalSplit = split.valid if which == "valid" else split.test
        if max_users and len(part) > max_users:
            # a fixed subset, the same at every evaluation, for quick validation on big data
            keep = np.sort(np.random.default_rng(sample_seed).choice(len(part), max_users, replace=False))
            part = part.subset(keep)
        # users sorted by history length so that trimming a batch's all-padding columns
        # removes most of the transformer work (metrics are sums: order does not matter)
        part = part.subset(np.argsort(part.hist_len, kind="stable"))
        self.split, self.part, self.which = split, part, which
        self.data = split.data
        self.ks = list(ks)
        self.batch_size = batch_size
        # at most this many (user x position) tokens per batch: long histories (ML-100K, width
        # 200) then come in smaller batches, which bounds the attention buffers of a batch
        self.token_budget = token_budget
        self.width = width
        self.device = torch.device(device)
        self.inputs = torch.as_tensor(padded_prefixes(self.data, part.users, part.hist_len, width))
        self.targets = torch.as_tensor(part.targets, dtype=torch.long)
        self.users = torch.as_tensor(part.users, dtype=torch.long)
        self.negatives = {n: self._draw_negatives(n, sample_seed) for n in sampled if n < self.data.n_items}

    def __len__(self) -> int:
        return len(self.part)

    def _batches(self, rank: int = 0, world: int = 1):
        """Fixed-size chunks of this rank's users (the negative draws depend on these only)."""
        idx = np.arange(len(self.part))[rank::world]
        for start in range(0, len(idx), self.batch_size):
            yield idx[start : start + self.batch_size]

    def _scoring_batches(self, rank: int = 0, world: int = 1):
        """Chunks cut further so that users x (longest width in the chunk) <= token_budget.

        Users are sorted by history length, so a chunk's last user sets its width."""
        for chunk in self._batches(rank, world):
            widths = np.minimum(self.part.hist_len[chunk], self.width)
            start = 0
            while start < len(chunk):
                # largest n with n * widths[start + n - 1] <= budget (widths ascend)
                n = int(np.searchsorted(np.arange(1, len(chunk) - start + 1) * widths[start:] > self.token_budget, True))
                n = max(1, n)
                yield chunk[start:start + n]
                start += n

    def _draw_negatives(self, n: int, seed: int) -> torch.Tensor:
        """Negatives per user, fixed by ``seed`` alone (not by batching or rank)."""
        gen = torch.Generator().manual_seed(seed + n)
        out = torch.empty(len(self.part), n, dtype=torch.long)
        for b in self._batches():
            exclude = history_mask(self.data, self.part.users[b], self.part.hist_len[b])
            exclude[torch.arange(len(b)), self.targets[b]] = True
            out[b] = sample_negatives(exclude, self.data.n_items, n, gen)
        return out

    @torch.no_grad()
    def run(self, score_fn: ScoreFn) -> dict[str, float]:
        rank, world = dist_info()[:2]
        full = MetricAccumulator()
        sampled = {n: MetricAccumulator() for n in self.negatives}
        users_seen, ranks_seen = [], []
        sampled_seen: dict[int, list] = {n: [] for n in sampled}
        for b in self._scoring_batches(rank, world):
            inputs = trim_padding(self.inputs[b]).to(self.device)
            users = self.users[b].to(self.device)
            targets = self.targets[b].to(self.device)
            scores = score_fn(inputs, users).float()
            exclude = history_mask(self.data, self.part.users[b], self.part.hist_len[b], device=self.device)
            ranks = ranks_from_scores(scores, targets, exclude)
            full.add(rank_metrics(ranks.cpu(), self.ks))
            users_seen.append(self.users[b])
            ranks_seen.append(ranks.cpu())
            for n, acc in sampled.items():
                cand = torch.cat([targets.view(-1, 1), self.negatives[n][b].to(self.device)], dim=1)
                cand_scores = scores.gather(1, cand)
                cand_ranks = ranks_from_scores(cand_scores, torch.zeros_like(targets)).cpu()
                acc.add(rank_metrics(cand_ranks, self.ks))
                sampled_seen[n].append(cand_ranks)
        # 0-based rank of each user's target (this rank's share under torchrun): paired tests use it;
        # ``last_sampled_ranks[n]`` holds the ranks among the n sampled negatives, same user order
        self.last_ranks = (torch.cat(users_seen).numpy(), torch.cat(ranks_seen).numpy()) if users_seen else None
        self.last_sampled_ranks = {n: torch.cat(r).numpy() for n, r in sampled_seen.items() if r}
        full.all_reduce()
        out = full.result()
        for n, acc in sampled.items():
            acc.all_reduce()
            out.update({sampled_key(n, k): v for k, v in acc.result().items()})
        return out


def popularity_scores(split: Split) -> torch.Tensor:
    """Training-set popularity of every item, the baseline every model must beat."""
    from core.data.splits import item_popularity

    pop = torch.as_tensor(item_popularity(split.data, split.train_len), dtype=torch.float32)
    pop[0] = -float("inf")
    return pop


def popularity_score_fn(split: Split) -> ScoreFn:
    pop = popularity_scores(split)
    # score = position in a stable popularity order, so equal counts do not tie (a tie would
    # rank the target pessimistically); ties go to the lower item index
    order = torch.argsort(-pop[1:], stable=True) + 1
    ranked = torch.full_like(pop, -float("inf"))
    ranked[order] = torch.arange(len(order), 0, -1, dtype=torch.float32)
    return lambda inputs, users: ranked.to(inputs.device).expand(len(inputs), -1)

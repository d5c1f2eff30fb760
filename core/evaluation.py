"""Batched evaluation of a scoring function on a validation or test split.

``Evaluator`` prepares everything that does not depend on the model once (padded history
inputs, targets, the fixed-seed sampled negatives) and then scores users in batches:
full ranking over all items with the user's history masked, plus the sampled protocols.
Under torchrun each rank scores a disjoint shard of users and the sums are all-reduced.

Catalog scale (``item_chunk`` > 0): a scorer with ``encode`` / ``score_chunk`` /
``score_items`` (a ``ChunkScorer``, e.g. ``core.seqrec.ModelScorer``) is scored one item chunk
at a time; each chunk adds its count of items ranked above the target, so peak memory is
batch x chunk instead of batch x catalog, with the same ranks (``chunked_ranks``).
``topk_items`` gives top-K recommendations the same way with a running top-K.

Repeat consumption (``repeat_targets``): a target the user already has in the history.
``keep`` (default) masks the history but leaves the target rankable, so re-consuming a
known item can be predicted. ``exclude`` scores every such user as a miss (rank infinity,
every metric 0), as evaluators that mask the whole history including the target do
(S3-Rec / ICLRec / BSARec code sets history scores to 0 before the top-K). The share of such
users is ``Evaluator.repeat_share``; the preparers print it per dataset.

A progress bar with an ETA (tqdm over users) shows when stderr is a terminal and at least
``PROGRESS_MIN_USERS`` users are scored.

``C2DSRProtocol``: the sampled protocol of C2DSR's own evaluation lines (target vs 999 sampled
target-domain items), scored through a model's ``candidate_scores``.
"""
from __future__ import annotations

import sys
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from core.data.batches import trim_padding
from core.data.c2dsr import C2DSREval
from core.data.leakage import leak_free_users
from core.data.splits import EvalSplit, Split, history_mask, padded_prefixes, prefix_positions
from core.dist import dist_info
from core.errors import DataError, UserError
from core.metrics import MetricAccumulator, rank_metrics, ranks_from_scores, sample_negatives

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(padded history [B, W], user indexes [B]) -> scores [B, n_items + 1]."""


class ChunkScorer(Protocol):
    """A ScoreFn that can also score the catalog in pieces (used when ``item_chunk`` > 0)."""

    def __call__(self, inputs: torch.Tensor, users: torch.Tensor) -> torch.Tensor: ...
    def encode(self, inputs: torch.Tensor, users: torch.Tensor) -> torch.Tensor: ...
    def score_chunk(self, h: torch.Tensor, start: int, end: int) -> torch.Tensor: ...  # items start..end-1
    def score_items(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...  # [B, C] ids -> [B, C]


def chunked_ranks(score_chunk: Callable[[int, int], torch.Tensor], target_scores: torch.Tensor, targets: torch.Tensor,
                  hist_rows: torch.Tensor, hist_items: torch.Tensor, n_items: int, chunk: int) -> torch.Tensor:
    """0-based ranks as ``ranks_from_scores`` with the history excluded, one item chunk at a time.

    ``score_chunk(start, end)`` -> [B, end - start] scores of items start..end-1 (column 0 of
    the catalog is padding); ``hist_rows`` / ``hist_items`` list the (row, item) pairs to
    exclude. Ties count against the target, and the target never counts itself, as unchunked.
    """
    ranks = torch.zeros(len(targets), dtype=torch.int32, device=targets.device)
    t = target_scores.view(-1, 1)
    rows_all = torch.arange(len(targets), device=targets.device)
    for start in range(0, n_items + 1, chunk):
        end = min(n_items + 1, start + chunk)
        ahead = score_chunk(start, end).float() >= t
        sel = (hist_items >= start) & (hist_items < end)
        ahead[hist_rows[sel], hist_items[sel] - start] = False
        hit = (targets >= start) & (targets < end)
        ahead[rows_all[hit], targets[hit] - start] = False
        if start == 0:
            ahead[:, 0] = False  # padding
        ranks += ahead.sum(dim=1, dtype=torch.int32)
    return ranks


def topk_items(score_chunk: Callable[[int, int], torch.Tensor], batch: int, n_items: int, k: int, chunk: int,
               exclude_rows: torch.Tensor | None = None, exclude_items: torch.Tensor | None = None,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (scores, item indexes) per row over items 1..n_items with a running top-K over
    item chunks: memory batch x (chunk + k). Excluded (row, item) pairs never appear; among
    equal scores the choice is unspecified, as with ``torch.topk``."""
    k = min(k, n_items)
    best_v = torch.full((batch, k), -float("inf"), device=device)
    best_i = torch.zeros((batch, k), dtype=torch.long, device=device)
    for start in range(0, n_items + 1, chunk):
        end = min(n_items + 1, start + chunk)
        s = score_chunk(start, end).float().clone()
        if start == 0:
            s[:, 0] = -float("inf")
        if exclude_rows is not None:
            sel = (exclude_items >= start) & (exclude_items < end)
            s[exclude_rows[sel], exclude_items[sel] - start] = -float("inf")
        v, i = s.topk(min(k, end - start), dim=1)
        v = torch.cat([best_v, v], 1)
        i = torch.cat([best_i, i + start], 1)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
        best_v, best_i = v.gather(1, order), i.gather(1, order)
    return best_v, best_i


def sampled_key(n: int, metric: str) -> str:
    return f"sampled-{n}/{metric}"


REPEAT_TARGETS = ("keep", "exclude")
PROGRESS_MIN_USERS = 50_000  # below this an evaluation takes seconds: no bar


def repeat_target_mask(data, part: EvalSplit, block: int = 1 << 16) -> np.ndarray:
    """[len(part)] bool: the user's target already occurs in the user's history (prefix).

    Blocks of users bound the memory of the (row, position) arrays on catalog-scale data."""
    out = np.zeros(len(part), dtype=bool)
    for start in range(0, len(part), block):
        sl = slice(start, start + block)
        rows, pos = prefix_positions(data, part.users[sl], part.hist_len[sl])
        if len(rows):
            same = np.asarray(data.items[pos], dtype=np.int64) == part.targets[sl][rows]
            out[start + rows[same]] = True
    return out


def repeat_target_shares(data) -> dict[str, float]:
    """Leave-one-out shares of test and validation users whose target repeats a history item."""
    from core.data.splits import leave_one_out

    split = leave_one_out(data)
    return {which: float(repeat_target_mask(data, part).mean()) if len(part) else 0.0
            for which, part in (("test", split.test), ("valid", split.valid))}


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
        item_chunk: int = 0,
        score_budget: int = 6 << 20,
        repeat_targets: str = "keep",
    ) -> None:
        if repeat_targets not in REPEAT_TARGETS:
            raise UserError(f"eval.repeat_targets={repeat_targets!r}: use keep (a target already in the history stays "
                            "rankable) or exclude (such a user counts as a miss)")
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
        # ...and at most this many scores (users x catalog): 6M floats = 24 MB stay below glibc's
        # mmap threshold as core.cli sets it, so each batch reuses freed heap memory instead of
        # page-faulting a fresh block (a Beauty test evaluation, quiet machine: 1.68 s instead of 2.18 s on
        # two threads, 2.20 s instead of 2.78 s on one)
        self.score_users = max(1, score_budget // (split.data.n_items + 1)) if not item_chunk else batch_size
        self.width = width
        self.item_chunk = item_chunk  # >0: rank a ChunkScorer's items in chunks of this many
        self.device = torch.device(device)
        self.inputs = torch.as_tensor(padded_prefixes(self.data, part.users, part.hist_len, width))
        self.targets = torch.as_tensor(part.targets, dtype=torch.long)
        self.users = torch.as_tensor(part.users, dtype=torch.long)
        self.repeat_targets = repeat_targets
        self.repeat = torch.as_tensor(repeat_target_mask(self.data, part))  # [E] target already in the history
        self.repeat_share = float(self.repeat.float().mean()) if len(part) else 0.0
        self.negatives = {n: self._draw_negatives(n, sample_seed) for n in sampled if n < self.data.n_items}

    def __len__(self) -> int:
        return len(self.part)

    def _batches(self, rank: int = 0, world: int = 1):
        """Fixed-size chunks of this rank's users (the negative draws depend on these only)."""
        idx = np.arange(len(self.part))[rank::world]
        for start in range(0, len(idx), self.batch_size):
            yield idx[start : start + self.batch_size]

    def _scoring_batches(self, rank: int = 0, world: int = 1):
        """Chunks cut further so that users x (longest width in the chunk) <= token_budget and
        users x catalog <= score_budget (unchunked scoring).

        Users are sorted by history length, so a chunk's last user sets its width."""
        for chunk in self._batches(rank, world):
            widths = np.minimum(self.part.hist_len[chunk], self.width)
            start = 0
            while start < len(chunk):
                # largest n with n * widths[start + n - 1] <= budget (widths ascend)
                n = int(np.searchsorted(np.arange(1, len(chunk) - start + 1) * widths[start:] > self.token_budget, True))
                n = max(1, min(n, self.score_users))
                yield chunk[start:start + n]
                start += n

    def _draw_negatives(self, n: int, seed: int) -> torch.Tensor:
        """Negatives per user, fixed by ``seed`` alone (not by batching or rank)."""
        gen = torch.Generator().manual_seed(seed + n)
        out = torch.empty(len(self.part), n, dtype=torch.long)
        if self.item_chunk and self.item_chunk <= self.data.n_items:
            return self._draw_negatives_sparse(n, gen)
        for b in self._batches():
            exclude = history_mask(self.data, self.part.users[b], self.part.hist_len[b])
            exclude[torch.arange(len(b)), self.targets[b]] = True
            out[b] = sample_negatives(exclude, self.data.n_items, n, gen)
        return out

    def _draw_negatives_sparse(self, n: int, gen: torch.Generator, max_rounds: int = 100) -> torch.Tensor:
        """Catalog-scale draws (``item_chunk`` mode): distinct uniform negatives outside each user's
        history and target by rejection, O(users x (history + n)) instead of O(users x catalog).
        Same law as ``sample_negatives`` (uniform without replacement), other random numbers."""
        out = torch.empty(len(self.part), n, dtype=torch.long)
        for b in self._batches():
            rows, pos = prefix_positions(self.data, self.part.users[b], self.part.hist_len[b])
            width = int(self.part.hist_len[b].max()) + 1
            banned = torch.zeros(len(b), width, dtype=torch.long)  # 0 (padding) is never drawn anyway
            col = torch.as_tensor(np.arange(len(rows)) - np.repeat(np.cumsum(self.part.hist_len[b]) - self.part.hist_len[b],
                                                                     self.part.hist_len[b]))
            banned[torch.as_tensor(rows), col] = torch.as_tensor(np.asarray(self.data.items[pos], dtype=np.int64))
            banned[:, -1] = self.targets[b]
            banned = banned.sort(dim=1).values
            if int((self.data.n_items - (banned > 0).sum(1)).min()) < n:
                raise ValueError(f"a user has fewer than {n} items left to sample negatives from")
            draws = torch.randint(1, self.data.n_items + 1, (len(b), n), generator=gen)
            for _ in range(max_rounds):
                at = torch.searchsorted(banned, draws).clamp(max=width - 1)
                bad = banned.gather(1, at) == draws
                srt, order = draws.sort(dim=1)
                dup = torch.zeros_like(bad)
                dup.scatter_(1, order[:, 1:], srt[:, 1:] == srt[:, :-1])  # a repeat: all but its first copy
                bad |= dup
                if not bad.any():
                    break
                draws[bad] = torch.randint(1, self.data.n_items + 1, (int(bad.sum()),), generator=gen)
            else:
                raise RuntimeError("could not draw distinct negatives; the catalog is nearly exhausted")
            out[b] = draws
        return out

    @torch.no_grad()
    def run(self, score_fn: ScoreFn) -> dict[str, float]:
        rank, world = dist_info()[:2]
        full = MetricAccumulator()
        sampled = {n: MetricAccumulator() for n in self.negatives}
        users_seen, ranks_seen = [], []
        sampled_seen: dict[int, list] = {n: [] for n in sampled}
        exclude_repeats = self.repeat_targets == "exclude" and bool(self.repeat.any())
        share = len(range(rank, len(self.part), world))
        bar = tqdm(total=share, desc=f"eval {self.which}", unit="user", leave=False, dynamic_ncols=True,
                   disable=rank != 0 or share < PROGRESS_MIN_USERS or not sys.stderr.isatty())
        for b in self._scoring_batches(rank, world):
            inputs = trim_padding(self.inputs[b]).to(self.device)
            users = self.users[b].to(self.device)
            targets = self.targets[b].to(self.device)
            if self.item_chunk:
                ranks, cand_score = self._chunked(score_fn, inputs, users, targets, b)
            else:
                scores = score_fn(inputs, users).float()
                exclude = history_mask(self.data, self.part.users[b], self.part.hist_len[b], device=self.device)
                ranks = ranks_from_scores(scores, targets, exclude)
                cand_score = lambda cand: scores.gather(1, cand)  # noqa: E731
            repeat = self.repeat[b] if exclude_repeats else None
            ranks = _miss_repeats(ranks.cpu(), repeat)
            full.add(rank_metrics(ranks, self.ks))
            users_seen.append(self.users[b])
            ranks_seen.append(ranks)
            for n, acc in sampled.items():
                cand = torch.cat([targets.view(-1, 1), self.negatives[n][b].to(self.device)], dim=1)
                cand_scores = cand_score(cand).float()
                cand_ranks = _miss_repeats(ranks_from_scores(cand_scores, torch.zeros_like(targets)).cpu(), repeat)
                acc.add(rank_metrics(cand_ranks, self.ks))
                sampled_seen[n].append(cand_ranks)
            bar.update(len(b))
        bar.close()
        # 0-based rank of each user's target (this rank's share under torchrun): paired tests use it;
        # ``last_sampled_ranks[n]`` holds the ranks among the n sampled negatives, same user order
        # (floats with inf for repeat targets under repeat_targets=exclude)
        self.last_ranks = (torch.cat(users_seen).numpy(), torch.cat(ranks_seen).numpy()) if users_seen else None
        self.last_sampled_ranks = {n: torch.cat(r).numpy() for n, r in sampled_seen.items() if r}
        full.all_reduce()
        out = full.result()
        for n, acc in sampled.items():
            acc.all_reduce()
            out.update({sampled_key(n, k): v for k, v in acc.result().items()})
        return out


    def _chunked(self, score_fn, inputs, users, targets, b):
        """Ranks of a batch with the catalog scored ``item_chunk`` items at a time, and a
        function giving scores of candidate items (for the sampled protocols)."""
        rows, pos = prefix_positions(self.data, self.part.users[b], self.part.hist_len[b])
        hist_rows = torch.as_tensor(rows, device=self.device)
        hist_items = torch.as_tensor(np.asarray(self.data.items[pos], dtype=np.int64), device=self.device)
        n = self.data.n_items
        if hasattr(score_fn, "encode"):
            h = score_fn.encode(inputs, users)
            target_scores = score_fn.score_items(h, targets.view(-1, 1)).float().view(-1)
            ranks = chunked_ranks(lambda s, e: score_fn.score_chunk(h, s, e), target_scores, targets,
                                  hist_rows, hist_items, n, self.item_chunk)
            return ranks, lambda cand: score_fn.score_items(h, cand)
        # a plain ScoreFn (e.g. the popularity baseline, a broadcast view): chunk the comparisons only
        scores = score_fn(inputs, users)
        target_scores = scores.gather(1, targets.view(-1, 1)).float().view(-1)
        ranks = chunked_ranks(lambda s, e: scores[:, s:e], target_scores, targets, hist_rows, hist_items, n,
                              self.item_chunk)
        return ranks, lambda cand: scores.gather(1, cand)

    @torch.no_grad()
    def recommend(self, score_fn, k: int, exclude_history: bool = True, rank: int = 0,
                  world: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` items of every evaluated user (this rank's share): (users, items [U, k],
        scores [U, k]), history left out; chunked when ``item_chunk`` > 0."""
        chunk = self.item_chunk or self.data.n_items + 1
        out_u, out_i, out_s = [], [], []
        for b in self._scoring_batches(rank, world):
            inputs = trim_padding(self.inputs[b]).to(self.device)
            users = self.users[b].to(self.device)
            if hasattr(score_fn, "encode"):
                h = score_fn.encode(inputs, users)
                score_chunk = lambda s, e, h=h: score_fn.score_chunk(h, s, e)  # noqa: E731
            else:
                scores = score_fn(inputs, users)
                score_chunk = lambda s, e, scores=scores: scores[:, s:e]  # noqa: E731
            er = ei = None
            if exclude_history:
                rows, pos = prefix_positions(self.data, self.part.users[b], self.part.hist_len[b])
                er = torch.as_tensor(rows, device=self.device)
                ei = torch.as_tensor(np.asarray(self.data.items[pos], dtype=np.int64), device=self.device)
            v, i = topk_items(score_chunk, len(b), self.data.n_items, k, chunk, er, ei, self.device)
            out_u.append(self.users[b].numpy())
            out_i.append(i.cpu().numpy())
            out_s.append(v.cpu().numpy())
        return np.concatenate(out_u), np.concatenate(out_i), np.concatenate(out_s)


def _miss_repeats(ranks: torch.Tensor, repeat: torch.Tensor | None) -> torch.Tensor:
    """``repeat_targets=exclude``: rank infinity (every metric 0) where the target repeats the history."""
    if repeat is None:
        return ranks
    ranks = ranks.to(torch.float64)  # every batch, so that the batches' ranks concatenate alike
    ranks[repeat] = float("inf")
    return ranks


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


def leak_controlled_metrics(ev: Evaluator, split: Split, ks: Sequence[int]) -> dict:
    """Full-ranking metrics of ``ev``'s last run over the users whose event's transition
    (previous item -> target) no training sequence of ``split`` holds verbatim
    (``core.data.leakage``), with their count as ``users``; this process's users under torchrun."""
    users, ranks = ev.last_ranks
    free = leak_free_users(split.data, split.train_len, ev.data, ev.part.users, ev.part.hist_len)[users]
    out: dict = {"users": int(free.sum())}
    if free.any():
        out.update({k: float(v.mean()) for k, v in rank_metrics(torch.as_tensor(ranks[free]), ks).items()})
    return out


# --------------------------------------------------------------------------- the C2DSR protocol
C2DSR_KS = (1, 5, 10)


class C2DSRProtocol:
    """C2DSR's evaluation lines (``core.data.c2dsr.read_c2dsr_eval``): each line's target ranked
    against ``n_neg`` items of the target domain (fixed seed) other than the target (as C2DSR
    samples them; ``exclude_history`` also keeps the line's own target-domain history out); MRR,
    NDCG@1/5/10, HR@1/5/10. ``spe`` / ``cross``: per-line user vectors (TriGRec's exports for these
    lines) that ``run`` hands to the model's ``candidate_scores`` as side inputs of those names.
    ``input_map`` (global -> the model's item ids, 0 = dropped) is for a model that reads more than
    the target domain's history (the merged-domain peer); candidates, targets and the history
    exclusion stay in the target domain's ids (``global_to_local``)."""

    def __init__(self, ev: C2DSREval, global_to_local: np.ndarray, n_items: int, maxlen: int,
                 spe: np.ndarray | None, cross: np.ndarray | None, n_neg: int = 999, seed: int = 0,
                 device="cpu", batch_size: int = 1024, exclude_history: bool = False,
                 input_map: np.ndarray | None = None) -> None:
        self.device, self.batch_size = torch.device(device), batch_size
        hist = [global_to_local[h] for h in ev.histories]
        hist = [h[h > 0] for h in hist]  # the target domain's part of the history
        read = hist if input_map is None else [h[h > 0] for h in (input_map[h] for h in ev.histories)]
        self.inputs = torch.zeros(len(ev), maxlen, dtype=torch.long)
        for i, h in enumerate(read):
            if len(h):
                self.inputs[i, -min(len(h), maxlen):] = torch.as_tensor(h[-maxlen:])
        targets = global_to_local[ev.targets]
        if (targets == 0).any():
            raise DataError(f"{ev.source}: a target item is outside the target domain")
        gen = torch.Generator().manual_seed(seed)
        cands = []
        for start in range(0, len(ev), batch_size):
            stop = min(start + batch_size, len(ev))
            exclude = torch.zeros(stop - start, n_items + 1, dtype=torch.bool)
            if exclude_history:
                for r, h in enumerate(hist[start:stop]):
                    exclude[r, torch.as_tensor(h, dtype=torch.long)] = True
            exclude[torch.arange(stop - start), torch.as_tensor(targets[start:stop])] = True
            cands.append(sample_negatives(exclude, n_items, n_neg, gen))
        self.candidates = torch.cat([torch.as_tensor(targets).view(-1, 1), torch.cat(cands)], dim=1)
        self.spe = torch.as_tensor(spe, dtype=torch.float32) if spe is not None else None
        self.cross = torch.as_tensor(cross, dtype=torch.float32) if cross is not None else None
        self.targets = torch.as_tensor(targets, dtype=torch.long)  # local ids
        # each line's last target-domain item before its target (0: none), for the leak-controlled view
        self.previous = np.array([int(h[-1]) if len(h) else 0 for h in hist], dtype=np.int64)
        self.lines = np.asarray(ev.lines)  # 0-based line numbers in the C2DSR file, for per-line ranks
        self.last_ranks: torch.Tensor | None = None  # 0-based rank of each line's target, last run

    def __len__(self) -> int:
        return len(self.inputs)

    @torch.no_grad()
    def run(self, model) -> dict[str, float]:
        acc, all_ranks = MetricAccumulator(), []
        for start in range(0, len(self), self.batch_size):
            sl = slice(start, start + self.batch_size)
            side = {k: t[sl].to(self.device) for k, t in (("spe", self.spe), ("cross", self.cross)) if t is not None}
            scores = model.candidate_scores(self.inputs[sl].to(self.device), self.candidates[sl].to(self.device),
                                            **side).float()
            ranks = ranks_from_scores(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))
            all_ranks.append(ranks.cpu())
            m = rank_metrics(ranks.cpu(), C2DSR_KS)
            acc.add({k: v for k, v in m.items() if k == "MRR" or k.startswith(("HR@", "NDCG@"))})
        self.last_ranks = torch.cat(all_ranks) if all_ranks else torch.zeros(0, dtype=torch.long)
        return acc.result()

    def split_by_training_count(self, item_counts: np.ndarray) -> dict:
        """Metrics of the last run over lines whose target the training data holds at least once
        (``seen``) and never (``unseen``), with the unseen share. C2DSR trained on its own file,
        which is not available; ~40% of its Food-Kitchen test targets never occur in the pickles,
        and no model trained on them can rank such an item (its embedding only ever got pushed
        down as a sampled negative)."""
        seen = item_counts[self.targets.numpy()] > 0
        out: dict = {"unseen_target_share": float((~seen).mean()) if len(seen) else 0.0}
        out.update(self.subset_metrics({"seen": seen, "unseen": ~seen}))
        return out

    def subset_metrics(self, masks: dict[str, np.ndarray]) -> dict:
        """``{name: metrics}`` of the last run over the lines of each boolean mask (a mask that
        selects no line is left out)."""
        if self.last_ranks is None:
            raise RuntimeError("run() first")
        out = {}
        for name, mask in masks.items():
            mask = torch.as_tensor(np.asarray(mask, dtype=bool))
            if mask.any():
                m = rank_metrics(self.last_ranks[mask], C2DSR_KS)
                out[name] = {k: float(v.mean()) for k, v in m.items() if k == "MRR" or k.startswith(("HR@", "NDCG@"))}
        return out

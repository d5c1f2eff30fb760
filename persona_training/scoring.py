"""Scoring users against items' personas, and reranking candidate lists.

A user's vector is the renormalized mean of their most recent interaction embeddings (as in
training); an item's score is the max (or mean) cosine between that vector and the item's persona
embeddings. ``rerank_lists`` reorders upstream candidate lists by that score:

- only candidates with personas (or a fallback text) in the cache are scored; they are sorted
  among the slots they held, so every other entry keeps its upstream slot (a list with nothing
  scored comes out unchanged);
- ``[PAD]`` keeps its slot (a miss, as the shared evaluator counts it) or, with ``pad=drop``, is
  removed; users without a history keep their upstream list; everything is counted;
- ``fusion_weight`` w > 0 mixes in the upstream score: ``(1-w) z(persona) + w z(upstream)``, z
  standardized over the scored candidates of the list.

``Scorer`` does the same in memory from texts, for experiments that train many encoders.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from core.candidates import candidate_metrics


def user_vector(rows: np.ndarray | None, max_history: int = 0) -> np.ndarray | None:
    """Mean of the last ``max_history`` rows (0 = all), L2-normalized; None without rows."""
    if rows is None or len(rows) == 0:
        return None
    if max_history > 0:
        rows = rows[-max_history:]
    v = np.asarray(rows, dtype=np.float32).mean(0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else None


def aggregate(sims: np.ndarray, offsets: Sequence[int], agg: str = "max") -> np.ndarray:
    """``sims`` [U, P] over persona rows -> [U, I] per item (rows offsets[i]:offsets[i+1]); every item
    needs at least one row."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) < 2:
        return np.zeros((sims.shape[0], 0), dtype=np.float32)
    counts = np.diff(offsets)
    if (counts < 1).any():
        raise ValueError("every item needs at least one persona row")
    if agg == "max":
        return np.maximum.reduceat(sims, offsets[:-1], axis=1)
    if agg == "mean":
        return np.add.reduceat(sims, offsets[:-1], axis=1) / counts
    raise ValueError(f"persona aggregation {agg!r}: use max or mean")


def _z(x: np.ndarray) -> np.ndarray:
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


COUNT_KEYS = ("users", "users_scored", "users_unchanged", "users_without_history", "users_without_upstream_scores",
              "candidates", "scored", "unknown_items", "pads", "pads_dropped")


def rerank_lists(candidates: dict[str, list[tuple[str | None, float | None]]],
                 user_vec: Callable[[str], np.ndarray | None],
                 item_rows: Callable[[str], np.ndarray | None],
                 agg: str = "max", fusion_weight: float = 0.0, pad: str = "keep") -> tuple[dict, dict]:
    """Rerank upstream lists ``{user: [(item or None for [PAD], upstream score), ...]}``.

    ``user_vec(user)`` gives a user's vector (None: no history); ``item_rows(item)`` the item's
    persona embeddings (None: unknown item). Returns ``({user: [entry, ...]}, counts)`` with entries
    ``{item_id, score, upstream_rank, upstream_score, scored}`` best first.
    """
    if agg not in ("max", "mean") or pad not in ("keep", "drop"):
        raise ValueError(f"agg {agg!r} / pad {pad!r}: use max|mean and keep|drop")
    counts = Counter(dict.fromkeys(COUNT_KEYS, 0))  # every key present, zeros included
    out: dict[str, list[dict]] = {}
    for user, rows in candidates.items():
        counts["users"] += 1
        counts["candidates"] += len(rows)
        counts["pads"] += sum(item is None for item, _s in rows)
        u = user_vec(user)
        entries = [{"item_id": item if item is not None else "[PAD]", "score": None, "upstream_rank": j + 1,
                    "upstream_score": s, "scored": False} for j, (item, s) in enumerate(rows)]
        slots, scores = [], []
        counts["users_without_history"] += u is None
        for j, (item, _s) in enumerate(rows):
            if item is None:
                continue
            p = item_rows(item)
            if p is None or len(p) == 0:
                counts["unknown_items"] += 1
            elif u is not None:
                sims = np.asarray(p, dtype=np.float32) @ u
                slots.append(j)
                scores.append(float(sims.max() if agg == "max" else sims.mean()))
        if slots:
            counts["users_scored"] += 1
            counts["scored"] += len(slots)
            final = np.asarray(scores, dtype=np.float64)
            upstream = [rows[j][1] for j in slots]
            if fusion_weight > 0:
                if any(s is None for s in upstream):
                    counts["users_without_upstream_scores"] += 1  # nothing to fuse with: persona score alone
                else:
                    final = (1 - fusion_weight) * _z(final) + fusion_weight * _z(np.asarray(upstream, dtype=np.float64))
            order = sorted(range(len(slots)), key=lambda i: -final[i])  # stable: ties keep upstream order
            placed = [entries[slots[i]] for i in order]
            for e, i in zip(placed, order):
                e["score"], e["scored"] = round(float(final[i]), 6), True
            for slot, e in zip(slots, placed):
                entries[slot] = e
        if pad == "drop":
            counts["pads_dropped"] += sum(e["item_id"] == "[PAD]" for e in entries)
            entries = [e for e in entries if e["item_id"] != "[PAD]"]
        out[user] = entries
    counts["users_unchanged"] = counts["users"] - counts["users_scored"]
    return out, dict(counts)


def as_ranked(entries: dict[str, list[dict]]) -> dict[str, list[str | None]]:
    """Entries -> the item lists ``core.candidates.candidate_metrics`` takes ([PAD] -> None)."""
    return {u: [None if e["item_id"] == "[PAD]" else e["item_id"] for e in es] for u, es in entries.items()}


def breakdown(lists: dict[str, dict[str, list]], truth: dict[str, set[str]], history_len: dict[str, int],
              item_counts: Counter, k: int = 10, cold_max: int = 5, head_fraction: float = 0.2) -> dict:
    """HR/NDCG@k per user group for each named set of lists.

    Users: ``cold`` (1..cold_max interactions), ``warm`` (more), ``no_history``. Items: ``head`` if
    the user's target is among the most interacted items that make up ``head_fraction`` of the
    items seen in the histories, else ``tail`` (including items never seen).
    """
    ranked = sorted(item_counts, key=lambda i: (-item_counts[i], i))
    head = set(ranked[: math.ceil(head_fraction * len(ranked))]) if ranked else set()

    def user_group(u):
        n = history_len.get(u, 0)
        return "no_history" if n == 0 else "cold" if n <= cold_max else "warm"

    groups = {"warm": [], "cold": [], "no_history": [], "head": [], "tail": []}
    for u, items in truth.items():
        groups[user_group(u)].append(u)
        groups["head" if items & head else "tail"].append(u)
    out = {"k": k, "cold_max_interactions": cold_max, "head_fraction": head_fraction, "head_items": len(head), "groups": {}}
    for name, users in groups.items():
        if not users:
            continue
        sub = {u: truth[u] for u in users}
        out["groups"][name] = {"users": len(users)} | {
            label: {m: round(v, 6) for m, v in candidate_metrics(ls, sub, [k]).items() if m in (f"HR@{k}", f"NDCG@{k}")}
            for label, ls in lists.items()}
    return out


# --------------------------------------------------------------------------- in memory
class Scorer:
    """Score items given by text for users given by their interaction texts.

    ``model``: a SentenceTransformer (e.g. ``train_pairs(...).model``), a model folder, or None /
    "default" for zero-shot MiniLM. Each distinct text is encoded once per Scorer.

        s = Scorer(model)
        order = s.rank(history_texts, [["persona 1", "persona 2"], ["summary of item 2"], ...])
    """

    def __init__(self, model=None, device: str = "cpu", batch_size: int = 64, amp: bool = True, agg: str = "max",
                 max_history: int = 0):
        from persona_training.encoder import load_encoder

        self.model = model if hasattr(model, "encode") else load_encoder(model, device)
        self.batch_size, self.amp, self.agg, self.max_history = batch_size, amp, agg, max_history
        self._memo: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from persona_training.encoder import embed_texts

        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            for t, v in zip(new, embed_texts(self.model, new, self.batch_size, self.amp)):
                self._memo[t] = v
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])

    def user_vectors(self, histories: Sequence[str | Sequence[str]]) -> np.ndarray:
        from persona_training.encoder import as_history

        lists = [as_history(h) for h in histories]
        self.embed([t for h in lists for t in h])  # one batched pass for all users
        vecs = [user_vector(self.embed(h), self.max_history) for h in lists]
        dim = next((v.shape[0] for v in vecs if v is not None), 0)
        return np.stack([v if v is not None else np.zeros(dim, dtype=np.float32) for v in vecs])

    def scores(self, histories: Sequence[str | Sequence[str]], items: Sequence[str | Sequence[str]]) -> np.ndarray:
        """[users, items]: each item is one text or a list of persona texts (max/mean over them)."""
        lists = [[it] if isinstance(it, str) else list(it) for it in items]
        rows = self.embed([t for it in lists for t in it])
        offsets = np.cumsum([0] + [len(it) for it in lists])
        return aggregate(self.user_vectors(histories) @ rows.T, offsets, self.agg)

    def rank(self, history: str | Sequence[str], items: Sequence[str | Sequence[str]]) -> np.ndarray:
        """Item indexes best first (ties keep the given order)."""
        s = self.scores([history], items)[0]
        return np.argsort(-s, kind="stable")

"""The shared evaluator for candidate lists: any pipeline's ranked lists vs ground truth.

    python -m core.candidates --candidates cand.jsonl --gt gt.jsonl --ks 5,10,20

Candidates: one JSON object per user, ``{"user_id": U, "results": [{"item_id": I, "score": s}, ...]}``
(the Persona4Rec layout) or ``{"user_id": U, "items": [I, ...]}``, best first. Ground truth:
``{"user_id": U, "item_id": I}`` or ``{"user_id": U, "item_ids": [...]}``; several lines per
user add up. A placeholder id ``[PAD]`` keeps its slot and counts as a miss. A user with ground truth but no list
counts as all misses and is reported.

Repeated items: a ranked list holds each item once. A file whose list names an item twice is
refused with its file:line (``--repeats keep-first`` reads it anyway). Whatever the input,
``candidate_metrics`` counts an item at its first position only; a later copy keeps its slot
as a miss, like ``[PAD]``, so a repeat never raises a metric (Recall and NDCG stay <= 1) and
later items keep their rank. Files are read as UTF-8, with or without a byte-order mark.
"""
from __future__ import annotations

from pathlib import Path

import torch

from core.data.jsonl import iter_jsonl, require
from core.errors import DataError
from core.metrics import MetricAccumulator, first_hits, list_metrics

PLACEHOLDERS = {"[PAD]", None, ""}
REPEATS = ("error", "keep-first")


def read_candidates(path: str | Path, repeats: str = "error") -> dict[str, list[str | None]]:
    return {user: [item for item, _score in rows] for user, rows in read_scored_candidates(path, repeats).items()}


def read_scored_candidates(path: str | Path, repeats: str = "error") -> dict[str, list[tuple[str | None, float | None]]]:
    """Like ``read_candidates`` but keeps each entry's ``score`` (None when absent, e.g. ``items`` lists).

    ``repeats``: ``error`` (default) refuses a list naming an item twice, with its file:line;
    ``keep-first`` turns later copies into placeholders (misses that keep their slot).
    """
    if repeats not in REPEATS:
        raise ValueError(f"repeats={repeats!r}: use one of {', '.join(REPEATS)}")
    out: dict[str, list[tuple[str | None, float | None]]] = {}
    for lineno, obj in iter_jsonl(path):
        user = str(require(obj, "user_id", (str, int), path, lineno))
        if "results" in obj:
            results = require(obj, "results", list, path, lineno)
            rows = []
            for j, r in enumerate(results):
                if not isinstance(r, dict) or "item_id" not in r:
                    raise DataError(f"{path}:{lineno}: results[{j}] needs an 'item_id'")
                score = r.get("score")
                if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                    raise DataError(f"{path}:{lineno}: results[{j}].score should be a number, got {type(score).__name__}")
                rows.append((r["item_id"], None if score is None else float(score)))
        elif "items" in obj:
            rows = [(i, None) for i in require(obj, "items", list, path, lineno)]
        else:
            raise DataError(f"{path}:{lineno}: expected key 'results' or 'items' with the ranked list")
        if user in out:
            raise DataError(f"{path}:{lineno}: user {user!r} has a second candidate list")
        # a placeholder keeps its slot as a miss, so later items keep their rank
        ranked = [(None if i in PLACEHOLDERS else str(i), s) for i, s in rows]
        first: dict[str, int] = {}
        for j, (item, s) in enumerate(ranked):
            if item is None:
                continue
            if item in first:
                if repeats == "error":
                    raise DataError(
                        f"{path}:{lineno}: user {user!r} lists item {item!r} twice (positions {first[item] + 1} and "
                        f"{j + 1}); a ranked list holds each item once: remove the repeat, or pass "
                        f"--repeats keep-first to count only its first position")
                ranked[j] = (None, s)  # keep-first: the copy is a miss in its slot
            else:
                first[item] = j
        out[user] = ranked
    return out


def read_ground_truth(path: str | Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for lineno, obj in iter_jsonl(path):
        user = str(require(obj, "user_id", (str, int), path, lineno))
        if "item_ids" in obj:
            items = require(obj, "item_ids", list, path, lineno)
        else:
            items = [require(obj, "item_id", (str, int), path, lineno)]
        out.setdefault(user, set()).update(str(i) for i in items)
    return out


def candidate_metrics(candidates: dict[str, list[str]], truth: dict[str, set[str]], ks) -> dict:
    """Mean metrics over the ground-truth users; lists are cut or padded to max(ks).

    An item counts at its first position only (a repeat is a miss in its slot), so no list,
    however built, can score Recall or NDCG above 1.
    """
    width = max(ks)
    users = sorted(truth)
    hits = torch.zeros(len(users), width)
    n_rel = torch.zeros(len(users))
    missing = 0
    for row, user in enumerate(users):
        ranked = candidates.get(user)
        if ranked is None:
            missing += 1
            ranked = []
        rel = truth[user]
        n_rel[row] = len(rel)
        hits[row, : min(width, len(ranked))] = torch.as_tensor(first_hits(ranked[:width], rel))
    acc = MetricAccumulator()
    acc.add(list_metrics(hits, n_rel, ks))
    return {**acc.result(), "users": len(users), "users_without_list": missing}

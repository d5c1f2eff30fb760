"""Amazon Reviews 2023 (McAuley Lab) review JSONL, two categories -> one two-domain dataset.

Input: one review file per category in the Hugging Face layout, ``<Category>.jsonl`` (or
``.jsonl.gz``), one JSON object per line with at least ``user_id`` (string),
``parent_asin`` (string), ``rating`` (number) and ``timestamp`` (integer, ms since epoch);
other keys (text, title, images, ...) are ignored. Give either the two files, or a folder
and ``--categories A,B``. The first category is domain A, the second domain B.

- ``--max_items N``: keep a uniform random sample of N review lines per category (fixed
  ``--seed``, reservoir sampling, so the whole file is never held in memory), as the seed
  project sampled its rows; 0 keeps every line.
- ``--min-user`` / ``--min-item``: one filtering pass per category on the sample (users and
  items with fewer reviews there are dropped; the seed used 10 and 10); default 0 = keep all.
- A user reviewing the same product twice in a category keeps the earliest review.
- Optional ``meta_<Category>.jsonl`` beside a review file gives item titles (``title``).

Output: both categories merged per user in time order, with ``item_domain`` (0 = first
category) and the category names in ``meta.json`` (``domains``): the layout that
``core.data.domains.load_domain_views`` and the cross-domain pipeline read. Item raw ids are
the ``parent_asin``; an ASIN found in both categories is two items, the second category's
named ``ASIN@Category``.

A malformed line (bad JSON, a missing key, a wrong type) stops the preparation with
``file:line: ...``; ``--skip-bad-lines`` skips such lines instead and counts them in
``meta.json`` notes.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
from pathlib import Path

import numpy as np

from core.data.jsonl import parse_object
from core.data.prepare.common import Prepared, build_sequences, require_dir, require_file
from core.errors import DataError, UserError
from core.store import check_name

SUFFIXES = (".jsonl", ".jsonl.gz")
KEYS = (("user_id", str), ("parent_asin", str), ("rating", (int, float)), ("timestamp", int))


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, nargs="+",
                   help="the two review files <Category>.jsonl[.gz], or one folder holding them (with --categories)")
    p.add_argument("--categories", default=None, help="comma-separated: source,target order e.g. Electronics,Video_Games")
    p.add_argument("--max_items", "--max-items", dest="max_items", type=int, default=0,
                   help="random sample of at most this many review lines per category (0 = all)")
    p.add_argument("--seed", type=int, default=42, help="seed of the --max_items sample (default 42)")
    p.add_argument("--min-user", type=int, default=0, help="drop users with fewer reviews in a category (default 0)")
    p.add_argument("--min-item", type=int, default=0, help="drop items with fewer reviews (default 0)")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed lines instead of stopping")
    p.add_argument("--name", default=None, help="dataset name (default amazon2023-<A>-<B>)")


def run(args: argparse.Namespace) -> list[Prepared]:
    return [load(args.path, categories=args.categories, name=args.name, out=args.out, max_items=args.max_items,
                 seed=args.seed, min_user=args.min_user, min_item=args.min_item, skip_bad_lines=args.skip_bad_lines)]


def category_files(paths: list[str | Path], categories: str | None) -> list[tuple[str, Path]]:
    """``[(category, review file), ...]`` from two files, or a folder plus ``categories``."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir():
        folder = require_dir(paths[0], "Amazon Reviews 2023 folder")
        if not categories:
            raise DataError(f"{folder}: a folder needs --categories A,B (the file stems of the two review files)")
        out = []
        for cat in (c.strip() for c in categories.split(",") if c.strip()):
            found = [folder / f"{cat}{s}" for s in SUFFIXES if (folder / f"{cat}{s}").is_file()]
            if not found:
                raise DataError(f"{folder}: no {cat}.jsonl or {cat}.jsonl.gz; check --categories")
            out.append((cat, found[0]))
    else:
        out = []
        for p in paths:
            require_file(p, "Amazon Reviews 2023 review file")
            stem = next((p.name[: -len(s)] for s in SUFFIXES if p.name.endswith(s)), None)
            if not stem:
                raise DataError(f"{p}: expected a <Category>.jsonl or .jsonl.gz review file")
            out.append((stem, p))
        if categories:
            raise DataError("--categories goes with a folder; with files the category is the file name")
    if len(out) != 2 or out[0][0] == out[1][0]:
        raise DataError(f"need exactly two different categories, got {[c for c, _ in out]}: the source and the "
                        "target domain")
    return out


def _open(path: Path):
    # utf-8-sig: a byte-order mark (Windows editors write one) must not become part of line 1
    return gzip.open(path, "rt", encoding="utf-8-sig") if path.name.endswith(".gz") else open(path, encoding="utf-8-sig")


def _parse(line: str, path: Path, lineno: int) -> tuple:
    obj = parse_object(line, path, lineno)
    values = []
    for key, types in KEYS:
        if key not in obj:
            raise DataError(f"{path}:{lineno}: missing key {key!r} (a review line needs user_id, parent_asin, "
                            "rating, timestamp)")
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, types) or (types is str and not v.strip()):
            want = "a non-empty string" if types is str else "an integer" if types is int else "a number"
            raise DataError(f"{path}:{lineno}: key {key!r} should be {want}, got {v!r}"[:300])
        if key == "rating" and not math.isfinite(v):
            raise DataError(f"{path}:{lineno}: key 'rating' is not finite")
        values.append(v)
    return tuple(values)


def read_reviews(path: Path, max_items: int = 0, seed: int = 42, skip_bad_lines: bool = False) -> tuple[list, int, int]:
    """Valid review rows ``(user, asin, rating, ts)`` (a uniform sample of ``max_items`` when
    set, in file order), the number of valid lines and the number of skipped bad lines."""
    rng = np.random.default_rng(seed)
    rows: list = []
    seen = bad = 0
    try:
        with _open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = _parse(line, path, lineno)
                except DataError:
                    if not skip_bad_lines:
                        raise
                    bad += 1
                    continue
                if not max_items or seen < max_items:
                    rows.append((seen, row))
                else:  # reservoir sampling (algorithm R): every line kept with probability max_items/seen
                    j = int(rng.integers(0, seen + 1))
                    if j < max_items:
                        rows[j] = (seen, row)
                seen += 1
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; is this a review JSONL file?") from None
    except (OSError, EOFError) as exc:  # e.g. a truncated .gz
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no review lines" + (f" ({bad} malformed lines skipped)" if bad else ""))
    rows.sort(key=lambda r: r[0])  # back to file order, so ties in time keep it
    return [r for _, r in rows], seen, bad


def read_titles(path: Path, wanted: set) -> dict:
    """``parent_asin -> title`` from a metadata JSONL (lines without both are ignored: titles
    are decoration, never needed to train)."""
    out = {}
    with _open(path) as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("parent_asin") in wanted and isinstance(obj.get("title"), str):
                out[obj["parent_asin"]] = obj["title"]
    return out


def _filter(rows: list, min_user: int, min_item: int) -> list:
    if min_user <= 1 and min_item <= 1:
        return rows
    users, items = {}, {}
    for u, i, *_ in rows:
        users[u] = users.get(u, 0) + 1
        items[i] = items.get(i, 0) + 1
    return [r for r in rows if users[r[0]] >= min_user and items[r[1]] >= min_item]


def load(paths, categories: str | None = None, name: str | None = None, out=None, max_items: int = 0,
         seed: int = 42, min_user: int = 0, min_item: int = 0, skip_bad_lines: bool = False) -> Prepared:
    if max_items < 0 or min_user < 0 or min_item < 0:
        raise DataError("--max_items, --min-user and --min-item must be >= 0")
    cats = category_files(paths if isinstance(paths, (list, tuple)) else [paths], categories)
    try:
        name = check_name(name or f"amazon2023-{cats[0][0]}-{cats[1][0]}", "dataset name")
    except UserError as exc:
        raise DataError(f"{exc}; pass --name") from None
    users, items, ts, ratings, domain_of, titles = [], [], [], [], {}, {}
    notes = [f"Amazon Reviews 2023: domain A = {cats[0][0]}, domain B = {cats[1][0]}; timestamps in ms"]
    for d, (cat, path) in enumerate(cats):
        rows, lines, bad = read_reviews(path, max_items, seed, skip_bad_lines)
        rows = _filter(rows, min_user, min_item)
        if not rows:
            raise DataError(f"{path}: no reviews survive --min-user {min_user} / --min-item {min_item}")
        first: dict = {}
        for u, asin, rating, t in rows:  # a repeated (user, product) keeps its earliest review
            if (u, asin) not in first or t < first[(u, asin)][1]:
                first[(u, asin)] = (rating, t)
        raw = {asin: (asin if domain_of.get(asin, d) == d else f"{asin}@{cat}") for asin in {a for _, a in first}}
        for (u, asin), (rating, t) in first.items():
            domain_of[raw[asin]] = d
            users.append(u)
            items.append(raw[asin])
            ts.append(t)
            ratings.append(rating)
        note = f"{cat}: {lines} review lines"
        if max_items and lines > max_items:
            note += f", random sample of {max_items} (seed {seed})"
        if bad:
            note += f", {bad} malformed lines skipped"
        notes.append(note + f", {len(first)} interactions kept")
        meta_file = path.with_name(f"meta_{path.name}")
        if meta_file.is_file():
            found = read_titles(meta_file, set(raw))
            titles.update({raw[a]: t for a, t in found.items()})
            notes.append(f"{cat}: titles of {len(found)} items from {meta_file.name}")
    # rows are in file order, first category first: equal timestamps keep that order
    data, _ = build_sequences(users, items, np.asarray(ts, dtype=np.int64), cats[0][1], ratings=ratings)
    data.item_domain = np.concatenate([[-1], [domain_of[i] for i in data.item_ids]]).astype(np.int8)
    side = {i: {"domain": cats[domain_of[i]][0], **({"title": titles[i]} if i in titles else {})} for i in data.item_ids}
    return Prepared(name=name, data=data, preparer="amazon-2023", source=cats[0][1].parent,
                    out=Path(out) if out else None, notes=notes, source_files=[p for _, p in cats], item_side=side,
                    extra_meta={"domains": [c for c, _ in cats], "max_items": max_items, "seed": seed,
                                "min_user": min_user, "min_item": min_item})

"""C2DSR's evaluation files (``validdata_new.txt`` / ``testdata_new.txt``) of any domain pair.

One sequence per line: ``user \\t seq_index \\t item|unix_ts|date| \\t ...``, items in the pair's
global 0-based space: domain A's items 0..n_A-1, then B's n_A..n_A+n_B-1. The sizes come
from the pair's item lists beside the files, ``Alist.txt`` and ``Blist.txt`` (one item per
line, ``raw id \\t name \\t local index``; C2DSR's loader counts their lines the same way), so
Food-Kitchen (29,207 + 34,886) and any other pair (Movie-Book, ...) read alike. As in C2DSR's
loader, tokens are sorted by timestamp (stable: ties keep file order) and the last token is
the target; its domain decides which model answers. Items are returned as indexes of the
prepared datasets (raw id + 1; 0 is padding). Files are UTF-8, with or without a BOM.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DataError

# Shared with the Food-Kitchen preparer (core.data.prepare.food_kitchen imports them from here, so
# that this reader does not import a preparer): domain A (food) has raw items 0..29206, and a
# prepared dataset's item index is raw id + ITEM_SHIFT (0 is padding).
N_FOOD = 29207
ITEM_SHIFT = 1

FILES = {"valid": "validdata_new.txt", "test": "testdata_new.txt"}
ITEM_LISTS = ("Alist.txt", "Blist.txt")


@dataclass
class C2DSREval:
    """Evaluation lines: ``history[i]`` (item indexes, time order) -> ``target[i]``."""

    lines: np.ndarray  # 0-based line numbers in the file
    users: np.ndarray  # C2DSR user index (first column)
    histories: list[np.ndarray]
    targets: np.ndarray
    target_domain: np.ndarray  # 0 = domain A (food), 1 = domain B (kitchen)
    source: str
    n_a: int = N_FOOD  # domain A's item count (from Alist.txt); A's indexes are 1..n_a
    n_b: int = 0  # domain B's item count (from Blist.txt)

    def item_domain(self, items: np.ndarray) -> np.ndarray:
        """0 for domain A, 1 for domain B (item indexes, i.e. raw id + 1)."""
        return item_domain_of(items, self.n_a)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, keep: np.ndarray) -> "C2DSREval":
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return C2DSREval(self.lines[idx], self.users[idx], [self.histories[i] for i in idx], self.targets[idx],
                         self.target_domain[idx], self.source, self.n_a, self.n_b)


def item_domain_of(items: np.ndarray, n_a: int = N_FOOD) -> np.ndarray:
    """0 for domain A, 1 for domain B (item indexes, i.e. raw id + 1); ``n_a`` = A's item count."""
    return (np.asarray(items) > n_a).astype(np.int8)


def read_item_list(path: Path) -> int:
    """Number of items in a C2DSR item list; the local indexes (last column) must be 0..n-1."""
    if not path.is_file():
        raise DataError(f"{path}: C2DSR item list not found; the domain sizes come from Alist.txt and Blist.txt, "
                        "which must sit beside validdata_new.txt / testdata_new.txt")
    seen: dict[int, int] = {}
    with path.open(encoding="utf-8-sig") as fh:
        for no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            last = raw.rstrip("\r\n").split("\t")[-1].strip()
            try:
                idx = int(last)
            except ValueError:
                raise DataError(f"{path}:{no}: expected `raw id<TAB>name<TAB>local index`, "
                                f"last field {last[:40]!r} is not an integer") from None
            if idx in seen:
                raise DataError(f"{path}:{no}: local index {idx} already on line {seen[idx]}")
            seen[idx] = no
    n = len(seen)
    if n == 0:
        raise DataError(f"{path}: no items")
    if min(seen) != 0 or max(seen) != n - 1:
        gap = next(i for i in range(n) if i not in seen)
        raise DataError(f"{path}: local indexes must run 0..{n - 1} without gaps; {gap} is missing")
    return n


def read_c2dsr_eval(folder: str | Path, which: str) -> C2DSREval:
    path = Path(folder) / FILES[which]
    if not path.is_file():
        raise DataError(f"{path}: C2DSR {which} file not found; set data.c2dsr_dir to the folder holding "
                        f"{FILES[which]} (e.g. ../shared/data/food-kitchen/c2dsr) or leave it empty")
    n_a, n_b = (read_item_list(Path(folder) / name) for name in ITEM_LISTS)
    n_items = n_a + n_b
    lines, users, histories, targets = [], [], [], []
    with path.open(encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the first user id
        for no, raw in enumerate(fh):
            cols = raw.rstrip("\r\n").split("\t")
            if len(cols) < 4:
                raise DataError(f"{path}:{no + 1}: expected user, sequence index and at least 2 item tokens")
            try:
                toks = [t.split("|") for t in cols[2:] if t]
                items = np.array([int(t[0]) for t in toks], dtype=np.int64)
                stamps = np.array([int(t[1]) for t in toks], dtype=np.int64)
                user = int(cols[0])
            except (ValueError, IndexError):
                raise DataError(f"{path}:{no + 1}: tokens must look like item|unix_ts|date|") from None
            if items.min() < 0 or items.max() >= n_items:
                bad = items[(items < 0) | (items >= n_items)][0]
                raise DataError(f"{path}:{no + 1}: item {bad} is outside the pair's item space 0..{n_items - 1} "
                                f"(Alist.txt {n_a} + Blist.txt {n_b} items); is the item list complete?")
            order = np.argsort(stamps, kind="stable")
            seq = items[order] + ITEM_SHIFT
            lines.append(no)
            users.append(user)
            histories.append(seq[:-1])
            targets.append(seq[-1])
    if not targets:
        raise DataError(f"{path}: no evaluation lines")
    targets_arr = np.array(targets, dtype=np.int64)
    return C2DSREval(np.array(lines), np.array(users), histories, targets_arr, item_domain_of(targets_arr, n_a),
                     str(path), n_a, n_b)

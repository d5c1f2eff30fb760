"""C2DSR's evaluation files (``validdata_new.txt`` / ``testdata_new.txt``) for Food-Kitchen.

One sequence per line: ``user \\t seq_index \\t item|unix_ts|date| \\t ...``, items in the
global 0-based Food-Kitchen space (food 0..29206, kitchen 29207..64092). As in C2DSR's
loader, tokens are sorted by timestamp (stable: ties keep file order) and the last token is
the target; its domain decides which model answers. Items are returned as indexes of the
prepared Food-Kitchen datasets (raw id + 1; 0 is padding).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.prepare.food_kitchen import ITEM_SHIFT, N_FOOD, N_ITEMS
from core.errors import DataError

FILES = {"valid": "validdata_new.txt", "test": "testdata_new.txt"}


@dataclass
class C2DSREval:
    """Evaluation lines: ``history[i]`` (item indexes, time order) -> ``target[i]``."""

    lines: np.ndarray  # 0-based line numbers in the file
    users: np.ndarray  # C2DSR user index (first column)
    histories: list[np.ndarray]
    targets: np.ndarray
    target_domain: np.ndarray  # 0 = food (A), 1 = kitchen (B)
    source: str

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, keep: np.ndarray) -> "C2DSREval":
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return C2DSREval(self.lines[idx], self.users[idx], [self.histories[i] for i in idx], self.targets[idx],
                         self.target_domain[idx], self.source)


def item_domain_of(items: np.ndarray) -> np.ndarray:
    """0 for food, 1 for kitchen (item indexes, i.e. raw id + 1)."""
    return (np.asarray(items) > N_FOOD).astype(np.int8)


def read_c2dsr_eval(folder: str | Path, which: str) -> C2DSREval:
    path = Path(folder) / FILES[which]
    if not path.is_file():
        raise DataError(f"{path}: C2DSR {which} file not found; set data.c2dsr_dir to the folder holding "
                        f"{FILES[which]} (e.g. ../shared/data/food-kitchen/c2dsr) or leave it empty")
    lines, users, histories, targets = [], [], [], []
    with path.open(encoding="utf-8") as fh:
        for no, raw in enumerate(fh):
            cols = raw.rstrip("\n").split("\t")
            if len(cols) < 4:
                raise DataError(f"{path}:{no + 1}: expected user, sequence index and at least 2 item tokens")
            try:
                toks = [t.split("|") for t in cols[2:] if t]
                items = np.array([int(t[0]) for t in toks], dtype=np.int64)
                stamps = np.array([int(t[1]) for t in toks], dtype=np.int64)
                user = int(cols[0])
            except (ValueError, IndexError):
                raise DataError(f"{path}:{no + 1}: tokens must look like item|unix_ts|date|") from None
            if items.min() < 0 or items.max() >= N_ITEMS:
                bad = items[(items < 0) | (items >= N_ITEMS)][0]
                raise DataError(f"{path}:{no + 1}: item {bad} is outside the Food-Kitchen space 0..{N_ITEMS - 1}")
            order = np.argsort(stamps, kind="stable")
            seq = items[order] + ITEM_SHIFT
            lines.append(no)
            users.append(user)
            histories.append(seq[:-1])
            targets.append(seq[-1])
    if not targets:
        raise DataError(f"{path}: no evaluation lines")
    targets_arr = np.array(targets, dtype=np.int64)
    return C2DSREval(np.array(lines), np.array(users), histories, targets_arr, item_domain_of(targets_arr), str(path))

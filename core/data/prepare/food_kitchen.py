"""TriGRec Food-Kitchen pickles -> six prepared datasets sharing one item space.

Each pickle is ``dict[int, list[int]]``: user key (0..34116) -> time-ordered items in the
global C2DSR id space, food (domain A) raw 0..29206 and kitchen (domain B) raw
29207..64092. Raw item 0 is a real item, so every item index is raw id + 1 (index 0 stays
padding). All six datasets get the full item space (n_items = 64093, even for ids that never
occur) and the same ``item_domain`` array (-1 padding, 0 food, 1 kitchen). Pickles are read
with ``core.data.safe_pickle`` (no globals can load).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from core.data.c2dsr import ITEM_SHIFT, N_FOOD  # N_FOOD: food raw ids 0..29206; index = raw id + ITEM_SHIFT
from core.data.prepare.common import Prepared, default_out, require_dir, require_file
from core.data.safe_pickle import load_plain_pickle
from core.data.sequences import SequenceData
from core.errors import DataError

STEMS = ("food_all", "food_train", "kitchen_all", "kitchen_train", "cross_f_train", "cross_k_train")
N_KITCHEN = 34886   # raw 29207..64092
N_ITEMS = N_FOOD + N_KITCHEN
DOMAINS = ["food", "kitchen"]
DATASET = "food-kitchen"
SHIFT_NOTE = (f"item ids shifted by +{ITEM_SHIFT}: raw item 0 is a real item, so index = raw id + 1 "
              f"(food raw 0..{N_FOOD - 1} -> 1..{N_FOOD}, kitchen raw {N_FOOD}..{N_ITEMS - 1} -> "
              f"{N_FOOD + 1}..{N_ITEMS}); user keys kept as raw ids")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, help="folder with the six TriGRec pickles (" + ", ".join(STEMS) + ")")


def run(args: argparse.Namespace) -> list[Prepared]:
    prepared = load(args.path, out=args.out)
    print(f"{DATASET}: {SHIFT_NOTE}")
    return prepared


def item_domain() -> np.ndarray:
    dom = np.empty(N_ITEMS + 1, dtype=np.int8)
    dom[0] = -1
    dom[1 : N_FOOD + 1] = 0
    dom[N_FOOD + 1 :] = 1
    return dom


def load(path: str | Path, out: str | Path | None = None) -> list[Prepared]:
    """Parse all six pickles (nothing is written); one ``Prepared`` per pickle, out = OUT/<stem>."""
    folder = require_dir(path, "Food-Kitchen pickle folder")
    files = [folder / f"{stem}.pkl" for stem in STEMS]
    for f in files:
        require_file(f, "Food-Kitchen pickle")
    root = Path(out) if out else default_out(DATASET)
    domain = item_domain()
    item_ids = list(range(N_ITEMS))
    result = []
    for stem, f in zip(STEMS, files):
        data, empty = _read_one(f, domain, item_ids)
        notes = [SHIFT_NOTE, "item_domain: 0 = food (domain A), 1 = kitchen (domain B); -1 = padding"]
        if empty:
            notes.append(f"dropped {empty} users with empty sequences")
        result.append(Prepared(
            name=f"{DATASET}/{stem}", data=data, preparer="food-kitchen", source=f, out=root / stem,
            notes=notes, source_files=[f],
            extra_meta={"domains": list(DOMAINS), "item_shift": ITEM_SHIFT, "collection": DATASET, "split": stem},
        ))
    return result


def _read_one(path: Path, domain: np.ndarray, item_ids: list) -> tuple[SequenceData, int]:
    obj = load_plain_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict of user -> item list, found {type(obj).__name__}")
    bad_key = next((k for k in obj if type(k) is not int), None)
    if bad_key is not None:
        raise DataError(f"{path}: user key {bad_key!r} is not an integer")
    users: list[int] = []
    seqs: list[list[int]] = []
    empty = 0
    for key in sorted(obj):
        seq = obj[key]
        if not isinstance(seq, list):
            raise DataError(f"{path}: user {key}: expected a list of item ids, found {type(seq).__name__}")
        if not seq:
            empty += 1
            continue
        if not all(type(i) is int for i in seq):
            bad = next(i for i in seq if type(i) is not int)
            raise DataError(f"{path}: user {key}: item {bad!r} is not an integer")
        if min(seq) < 0 or max(seq) >= N_ITEMS:
            bad = next(i for i in seq if not 0 <= i < N_ITEMS)
            raise DataError(f"{path}: user {key}: item id {bad} is outside the Food-Kitchen space 0..{N_ITEMS - 1}")
        users.append(key)
        seqs.append([i + ITEM_SHIFT for i in seq])
    if not seqs:
        raise DataError(f"{path}: no non-empty sequences")
    data = SequenceData.from_lists(seqs, n_items=N_ITEMS, user_ids=users, item_ids=item_ids,
                                   item_domain=domain)
    return data, empty

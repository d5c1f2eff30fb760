"""The distillation seed's "processed" layout, read and written safely.

The seed keeps five files per dataset: ``train_sequences``, ``valid_sequences``,
``test_sequences`` (each ``{user: [item, ...]}`` in internal 1-based item ids),
``mappings`` (``(user_map, item_map)``, raw id -> internal id) and ``counts``
(``(n_users, n_items)``). We write them as JSON (``write_processed``) and read JSON or the
seed's pickles, the latter only through the restricted unpickler (plain containers, no code).

A validation / test entry may be the whole sequence up to its held-out item, or just the
held-out item (a list of one or a bare id); both rebuild the same full sequence, and the
leave-one-out split of that full sequence is the seed's split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.data.safe_pickle import load_plain_pickle
from core.data.sequences import SequenceData
from core.data.splits import Split
from core.errors import DataError
from core.store import atomic_write_json

FILES = ("train_sequences", "valid_sequences", "test_sequences", "mappings", "counts")


def read_any(path: str | Path):
    """A ``.json`` file, or a plain-data pickle (anything else in it is refused)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; write the processed layout with "
                        "`python -m core.data.processed --dataset <name> --out <folder>`")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: accept a byte-order mark
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: invalid JSON ({exc})") from None
    return load_plain_pickle(path)


def _sequences(obj, path) -> dict:
    """``{user: [items]}`` with int user keys where they parse as ints (raw string ids otherwise)."""
    if isinstance(obj, list):  # a list indexed by user (entry 0 may be padding)
        obj = {u: s for u, s in enumerate(obj) if s is not None}
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected {{user: [items]}}, found {type(obj).__name__}")
    out = {}
    for user, seq in obj.items():
        try:
            items = [int(seq)] if isinstance(seq, (int, np.integer)) else [int(i) for i in seq]
        except (TypeError, ValueError):
            raise DataError(f"{path}: user {user!r}: items must be integer ids") from None
        try:
            user = int(user)
        except (TypeError, ValueError):
            pass
        out[user] = items
    return out


def _full_sequence(train: list[int], valid: list[int], test: list[int]) -> list[int]:
    def extend(base: list[int], held: list[int]) -> list[int]:
        if not held:
            return base
        if len(held) > len(base) and held[:len(base)] == base:
            return held  # the whole sequence up to the held-out item
        return base + held[-1:]

    return extend(extend(train, valid), test)


def read_processed(train: str | Path, valid: str | Path, test: str | Path, mappings: str | Path = "",
                   counts: str | Path = "") -> SequenceData:
    """The processed files -> one ``SequenceData`` whose leave-one-out split is theirs."""
    tr, va, te = (_sequences(read_any(p), p) for p in (train, valid, test))
    n_users = n_items = None
    if counts:
        c = read_any(counts)
        c = (c.get("n_users", c.get("num_users")), c.get("n_items", c.get("num_items"))) if isinstance(c, dict) else c
        try:
            n_users, n_items = int(c[0]), int(c[1])
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{counts}: expected (n_users, n_items)") from None
    users = set(tr) | set(va) | set(te)
    if any(not isinstance(u, int) for u in users):
        raise DataError(f"{train}: user keys must be the internal integer ids (raw ids belong in {mappings or 'mappings'})")
    users = sorted(users)
    seqs = [_full_sequence(tr.get(u, []), va.get(u, []), te.get(u, [])) for u in users]
    max_item = max((max(s) for s in seqs if s), default=0)
    if n_items is None:
        n_items = max_item
    if max_item > n_items or min((min(s) for s in seqs if s), default=1) < 1:
        raise DataError(f"{train}: item ids must lie in 1..{n_items} (from {counts or 'the largest id'})")
    user_raw = [str(u) for u in users]
    item_raw = [str(i) for i in range(1, n_items + 1)]
    if mappings:
        m = read_any(mappings)
        umap, imap = (m.get("user"), m.get("item")) if isinstance(m, dict) else (m[0], m[1])
        inv_u = {int(v): str(k) for k, v in umap.items()}
        inv_i = {int(v): str(k) for k, v in imap.items()}
        user_raw = [inv_u.get(u, str(u)) for u in users]
        item_raw = [inv_i.get(i, str(i)) for i in range(1, n_items + 1)]
    data = SequenceData.from_lists(seqs, n_items, user_raw, item_raw, meta={"source": str(train), "preparer": "processed"})
    data.validate(str(train))
    if n_users is not None and n_users < data.n_users:
        raise DataError(f"{counts}: says {n_users} users but the sequences hold {data.n_users}")
    return data


def training_split_from(data: SequenceData, path: str | Path) -> Split:
    """A split whose training rows are the sequences in ``path`` (users as in ``data``).

    Used for the seed's ``finetune_train_sequences``: another file of training sequences
    for the same users, keyed by internal id (as the seed writes them) or by raw user id.
    Users absent from it do not train in that stage.
    """
    seqs = _sequences(read_any(path), path)
    index = {raw: u for u, raw in enumerate(data.user_ids, start=1)}
    rows: list[list[int]] = [[] for _ in range(data.n_users)]
    for user, items in seqs.items():
        # integer keys are internal ids (the seed's files and ours); other keys are raw user ids
        u = (user if 1 <= user <= data.n_users else None) if isinstance(user, int) else index.get(user)
        if u is None:
            raise DataError(f"{path}: user {user} is not in the dataset")
        if items and (min(items) < 1 or max(items) > data.n_items):
            raise DataError(f"{path}: user {user} has item ids outside 1..{data.n_items}")
        rows[u - 1] = items
    other = SequenceData.from_lists(rows, data.n_items, data.user_ids, data.item_ids)
    empty = np.zeros(0, dtype=np.int64)
    from core.data.splits import EvalSplit

    none = EvalSplit(empty, empty, empty)
    return Split(other, other.lengths.copy(), none, none, "finetune")


def write_processed(data: SequenceData, split: Split, out: str | Path) -> Path:
    """The seed's five files as JSON: train prefix, sequence up to valid / test target, maps, counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, valid, test = {}, {}, {}
    valid_len = {int(u): int(n) + 1 for u, n in zip(split.valid.users, split.valid.hist_len)}
    test_len = {int(u): int(n) + 1 for u, n in zip(split.test.users, split.test.hist_len)}
    for u in range(1, data.n_users + 1):
        seq = data.sequence(u).tolist()
        train[u] = seq[: int(split.train_len[u - 1])]
        if u in valid_len:
            valid[u] = seq[: valid_len[u]]
        if u in test_len:
            test[u] = seq[: test_len[u]]
    atomic_write_json(out / "train_sequences.json", train, indent=None)
    atomic_write_json(out / "valid_sequences.json", valid, indent=None)
    atomic_write_json(out / "test_sequences.json", test, indent=None)
    atomic_write_json(out / "mappings.json", [{str(r): i for i, r in enumerate(data.user_ids, 1)},
                                              {str(r): i for i, r in enumerate(data.item_ids, 1)}], indent=None)
    atomic_write_json(out / "counts.json", [data.n_users, data.n_items], indent=None)
    return out

"""The data contract: per-user, time-ordered item sequences in a prepared dataset folder.

A prepared dataset is a folder ``data/<name>/`` with

- ``sequences.npz``: ``offsets`` (int64, n_users + 1) and ``items`` (int32, 1-based item
  indexes, all users concatenated, oldest first); optional ``timestamps`` (int64, same length
  as ``items``) and ``item_domain`` (int8, n_items + 1, entry 0 for padding = -1).
  User index ``u`` (1-based) owns ``items[offsets[u-1]:offsets[u]]``.
- ``user_ids.json`` / ``item_ids.json``: raw ids; entry ``i`` is the raw id of index ``i + 1``.
- ``meta.json``: name, counts, source, notes (e.g. an id shift), domain names, fingerprint.
- optional ``item_side.json`` / ``user_side.json``: side information keyed by raw id.

Index 0 is padding for both users and items. Only npz / npy (``allow_pickle=False``) and JSON
are read, so a prepared folder cannot execute code when loaded.

Large datasets use the memory-mappable layout instead of ``sequences.npz``: ``offsets.npy``
and ``items.npy`` (same dtypes and meaning; ``timestamps.npy`` / ``ratings.npy`` optional).
``load`` then maps them with ``np.load(mmap_mode="r")``: nothing is read until used, the OS
pages the items in and out, and no per-user Python object is ever built
(``core.data.synthetic_large`` writes this layout; ``save(layout="npy")`` too).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import DataError
from core.store import atomic_save_npy, atomic_save_npz, atomic_write_json, fingerprint_arrays

FORMAT_VERSION = 1
NPY_ARRAYS = ("offsets", "items", "timestamps", "item_domain", "ratings")  # the memory-mappable layout


@dataclass
class SequenceData:
    """All users' sequences in CSR form (``offsets`` + ``items``), 1-based ids, 0 = padding."""

    offsets: np.ndarray
    items: np.ndarray
    n_items: int
    user_ids: list
    item_ids: list
    timestamps: np.ndarray | None = None
    item_domain: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    ratings: np.ndarray | None = None  # explicit feedback aligned with ``items`` (MovieLens); else None

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int32)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.int64)
        if self.ratings is not None:
            self.ratings = np.asarray(self.ratings, dtype=np.float32)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lists(
        cls,
        sequences: Sequence[Sequence[int]],
        n_items: int,
        user_ids: list,
        item_ids: list,
        timestamps: Sequence[Sequence[int]] | None = None,
        **kwargs,
    ) -> "SequenceData":
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
        ts = None
        if timestamps is not None:
            ts = np.fromiter((t for s in timestamps for t in s), dtype=np.int64, count=int(offsets[-1]))
        return cls(offsets, items, n_items, list(user_ids), list(item_ids), ts, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_interactions(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """Items of 1-based user index ``user``."""
        if not 1 <= user <= self.n_users:
            raise DataError(f"user index {user} out of range 1..{self.n_users}")
        return self.items[self.offsets[user - 1] : self.offsets[user]]

    def fingerprint(self) -> str:
        return fingerprint_arrays(self.offsets, self.items)

    def validate(self, source: str = "sequences") -> None:
        """Check the contract; raise ``DataError`` naming ``source`` on the first violation."""
        if self.n_users == 0 or self.n_interactions == 0:
            raise DataError(f"{source}: no interactions; check the input file is not empty")
        if np.any(np.diff(self.offsets) < 0) or self.offsets[0] != 0:
            raise DataError(f"{source}: offsets are not non-decreasing from 0")
        empty = np.flatnonzero(self.lengths == 0)
        if len(empty):
            raise DataError(
                f"{source}: user {self.user_ids[empty[0]]!r} has an empty sequence "
                f"({len(empty)} such users); drop them or lower the min-count filter"
            )
        lo, hi = int(self.items.min()), int(self.items.max())
        if lo < 1 or hi > self.n_items:
            raise DataError(f"{source}: item index out of range [{lo}, {hi}], expected 1..{self.n_items}")
        if len(self.user_ids) != self.n_users or len(self.item_ids) != self.n_items:
            raise DataError(f"{source}: id maps ({len(self.user_ids)} users, {len(self.item_ids)} items) do not match the sequences")
        if self.timestamps is not None and len(self.timestamps) != len(self.items):
            raise DataError(f"{source}: timestamps length does not match items")
        if self.ratings is not None and len(self.ratings) != len(self.items):
            raise DataError(f"{source}: ratings length does not match items")

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | Path, extra_meta: dict | None = None, layout: str = "npz") -> Path:
        """Write the dataset folder; each file is replaced atomically.

        ``layout="npy"`` writes one ``.npy`` per array (memory-mapped on load) instead of
        ``sequences.npz``.
        """
        if layout not in ("npz", "npy"):
            raise ValueError(f"layout must be npz or npy, got {layout!r}")
        self.validate(str(directory))
        directory = Path(directory)
        arrays = {"offsets": self.offsets, "items": self.items}
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps
        if self.item_domain is not None:
            arrays["item_domain"] = np.asarray(self.item_domain, dtype=np.int8)
        if self.ratings is not None:
            arrays["ratings"] = self.ratings
        meta = {
            "format_version": FORMAT_VERSION,
            **self.meta,
            **(extra_meta or {}),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "fingerprint": self.fingerprint(),
        }
        self.meta = meta
        atomic_write_json(directory / "user_ids.json", self.user_ids, indent=None)
        atomic_write_json(directory / "item_ids.json", self.item_ids, indent=None)
        (directory / "meta.json").unlink(missing_ok=True)  # the folder is incomplete until meta.json is back
        if layout == "npz":
            for name in NPY_ARRAYS:
                (directory / f"{name}.npy").unlink(missing_ok=True)  # a stale npy layout would win on load
            atomic_save_npz(directory / "sequences.npz", **arrays)
        else:
            (directory / "sequences.npz").unlink(missing_ok=True)
            for name in NPY_ARRAYS:
                if name in arrays:
                    atomic_save_npy(directory / f"{name}.npy", arrays[name])
                else:
                    (directory / f"{name}.npy").unlink(missing_ok=True)
            meta["layout"] = "npy"
        # meta.json last: its presence marks a complete folder
        atomic_write_json(directory / "meta.json", meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "SequenceData":
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise DataError(
                f"{directory}: not a prepared dataset (no meta.json); run "
                "`python -m core.data.prepare <name> ...` first"
            )
        meta = _read_json(meta_path)
        try:
            if (directory / "items.npy").is_file():
                # memory-mapped: pages are read on use, the arrays never sit in RAM as a whole
                arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                          for name in NPY_ARRAYS if (directory / f"{name}.npy").is_file()}
            else:
                with np.load(directory / "sequences.npz", allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise DataError(f"{directory / 'sequences.npz'}: missing; prepare the dataset again") from None
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:  # empty, truncated or not an archive
            raise DataError(f"{directory / 'sequences.npz'}: unreadable ({exc or type(exc).__name__})") from None
        for key in ("offsets", "items"):
            if key not in arrays:
                raise DataError(f"{directory / 'sequences.npz'}: missing array {key!r}; prepare the dataset again")
        data = cls(
            offsets=arrays["offsets"],
            items=arrays["items"],
            n_items=int(meta["n_items"]),
            user_ids=_read_json(directory / "user_ids.json"),
            item_ids=_read_json(directory / "item_ids.json"),
            timestamps=arrays.get("timestamps"),
            item_domain=arrays.get("item_domain"),
            meta=meta,
            ratings=arrays.get("ratings"),
        )
        data.validate(str(directory))
        return data

    def user_side(self, directory: str | Path) -> dict | None:
        p = Path(directory) / "user_side.json"
        return _read_json(p) if p.is_file() else None

    def item_side(self, directory: str | Path) -> dict | None:
        p = Path(directory) / "item_side.json"
        return _read_json(p) if p.is_file() else None


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a hand-edited file may carry a BOM
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None


class IdMap:
    """Raw id -> contiguous 1-based index, in order of first sight."""

    def __init__(self) -> None:
        self.index: dict = {}
        self.raw: list = []

    def __len__(self) -> int:
        return len(self.raw)

    def add(self, raw) -> int:
        idx = self.index.get(raw)
        if idx is None:
            idx = len(self.raw) + 1
            self.index[raw] = idx
            self.raw.append(raw)
        return idx

    def get(self, raw) -> int | None:
        return self.index.get(raw)

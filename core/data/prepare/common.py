"""Helpers shared by the preparers: strict readers, id indexing, sequence building, writing.

A preparer parses its whole input into one or more :class:`Prepared` values without touching
the output folder; :func:`write_prepared` then writes each one (side files first, the
dataset via ``SequenceData.save`` with ``meta.json`` last). So bad input never leaves a
folder behind.
"""
from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from core.data.sequences import SequenceData
from core.errors import DataError, UserError
from core.store import atomic_write_json, check_name, dataset_folder

SIDE_FILES = ("item_side.json", "user_side.json")


@dataclass
class Prepared:
    """One parsed dataset, ready to be written."""

    name: str
    data: SequenceData
    preparer: str
    source: Path
    out: Path | None = None  # None: data/<name> under the repo root
    notes: list[str] = field(default_factory=list)
    source_files: list[Path] = field(default_factory=list)  # hashed into meta.json
    item_side: dict | None = None
    user_side: dict | None = None
    extra_meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- paths
def safe_name(name: str) -> str:
    """A name ``core.store.check_name`` accepts, close to ``name``: accents dropped, other runs -> '_'."""
    plain = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", plain).replace("..", "_").strip("._-") or "dataset"


def check_dataset_name(name: str, flag: str = "--name", parent: str | Path | None = None) -> str:
    """Refuse a dataset (folder) name the trainers would refuse later, before anything is written.

    The folder name becomes the dataset name, a path component of ``state_dict/<pipeline>/<dataset>/``,
    where ``core.store.check_name`` allows only letters, digits and ``_ . = + -``. ``parent``:
    the folder part of ``--out``, so that the suggestion is a whole ``--out`` value.
    """
    try:
        return check_name(name, "dataset name")
    except UserError:
        safe = safe_name(name)
        fix = f"{flag} {Path(parent) / safe if parent is not None else safe}"
        raise UserError(f"invalid dataset name {name!r} (from {flag}): the trainers allow letters, digits and "
                        f"_ . = + - only (no spaces, accents, '/' or '..'); nothing was written; use {fix}") from None


def default_out(name: str) -> Path:
    """``<repo>/data/<name>`` (a name, never a path: checked first, so a '/' is an error)."""
    return dataset_folder(check_name(name, "dataset name"))


def require_file(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file ({what} expected)")
    return path


def require_dir(path: str | Path, what: str = "folder") -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder ({what} expected)")
    return path


# --------------------------------------------------------------------------- reading
def read_text(path: str | Path, encoding: str = "utf-8", what: str = "file") -> str:
    """Whole file as text; missing, unreadable, undecodable or blank files raise ``DataError``."""
    path = require_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # a UTF-8 byte-order mark is not data: left in, it glues onto the first id ('\ufeff1', or
    # 'ï»¿1' when read as latin-1). Dropped for every encoding: no real file starts with those bytes.
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} text (byte {raw[exc.start]:#04x}); is this the right file?"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def iter_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` for non-blank lines, 1-based, without the line ending."""
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            yield lineno, line


def to_int(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        shown = token.strip()
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise DataError(f"{path}:{lineno}: {what} {shown!r} is not an integer; is this the right file?") from None


def fields(line: str, sep: str | None, n: int, path: Path, lineno: int, layout: str) -> list[str]:
    """Split ``line`` into exactly ``n`` fields or raise naming the line and the layout."""
    parts = line.split(sep)
    if len(parts) != n:
        raise DataError(f"{path}:{lineno}: expected {n} fields ({layout}), found {len(parts)}")
    return parts


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- building
def index_ids(values: Sequence, source: Path | str, what: str) -> tuple[list, np.ndarray]:
    """Map raw ids to 0-based codes.

    Integer ids are sorted numerically (so contiguous 1-based raw ids keep index == raw id);
    other ids keep the order of first sight. Returns ``(raw ids as plain Python values, codes)``.
    """
    if isinstance(values, list) and values and type(values[0]) is int:
        try:
            values = np.asarray(values, dtype=np.int64)
        except (OverflowError, TypeError, ValueError):
            pass  # mixed or huge values: fall back to first-sight order
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        uniq, codes = np.unique(values, return_inverse=True)
        return uniq.tolist(), codes.reshape(-1).astype(np.int64)
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return list(index), codes


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of rows kept by iterative ``k``-core filtering on users and items."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    nu, ni = int(users.max()) + 1, int(items.max()) + 1
    while True:
        uc = np.bincount(users[keep], minlength=nu)
        ic = np.bincount(items[keep], minlength=ni)
        new = keep & (uc[users] >= k) & (ic[items] >= k)
        if new.sum() == keep.sum():
            return keep
        keep = new


def build_sequences(
    users: Sequence,
    items: Sequence,
    timestamps: Sequence | np.ndarray | None,
    source: Path | str,
    min_count: int = 0,
    ratings: Sequence | np.ndarray | None = None,
) -> tuple[SequenceData, int]:
    """Interaction rows -> ``SequenceData`` (per user, by timestamp, ties in row order).

    Without timestamps the row order within a user is kept. ``min_count`` > 1 applies an
    iterative k-core filter first. Returns the data and the number of rows dropped.
    """
    user_ids, ucode = index_ids(users, source, "user")
    item_ids, icode = index_ids(items, source, "item")
    ts = None if timestamps is None else np.asarray(timestamps)
    values = None if ratings is None else np.asarray(ratings, dtype=np.float32)
    dropped = 0
    if min_count > 1 and len(ucode):
        keep = k_core(ucode, icode, min_count)
        dropped = int(len(keep) - keep.sum())
        if dropped:
            if not keep.any():
                raise DataError(
                    f"{source}: no interactions survive the {min_count}-core filter; lower --min-count"
                )
            rows = np.flatnonzero(keep)
            user_ids = np.asarray(user_ids, dtype=object)
            item_ids = np.asarray(item_ids, dtype=object)
            ukeep, ucode = np.unique(ucode[rows], return_inverse=True)
            ikeep, icode = np.unique(icode[rows], return_inverse=True)
            user_ids, item_ids = user_ids[ukeep].tolist(), item_ids[ikeep].tolist()
            ucode, icode = ucode.reshape(-1), icode.reshape(-1)
            if ts is not None:
                ts = ts[rows]
            if values is not None:
                values = values[rows]
    n = len(ucode)
    if n == 0:
        raise DataError(f"{source}: no interactions; check the input file is not empty")
    if ts is not None:
        order = np.lexsort((np.arange(n), ts, ucode))
    else:
        order = np.argsort(ucode, kind="stable")
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(ucode, minlength=len(user_ids)), out=offsets[1:])
    data = SequenceData(
        offsets=offsets,
        items=icode[order] + 1,
        n_items=len(item_ids),
        user_ids=user_ids,
        item_ids=item_ids,
        timestamps=None if ts is None else np.floor(ts[order]).astype(np.int64),
        ratings=None if values is None else values[order],
    )
    return data, dropped


# --------------------------------------------------------------------------- writing
def write_prepared(p: Prepared) -> Path:
    """Write one dataset folder: side files first, then the dataset with ``meta.json`` last."""
    out = Path(p.out) if p.out is not None else default_out(p.name)
    check_dataset_name(out.name, "--out", out.parent)  # the trainers take the folder name as the dataset name
    p.data.validate(str(out))
    shares = repeat_shares(p.data)
    if shares is not None:
        p.extra_meta["repeat_targets"] = shares
    meta = {
        "name": p.name,
        "preparer": p.preparer,
        "source": str(Path(p.source).resolve()),
        "source_sha256": {f.name: sha256_file(f) for f in p.source_files},
        "notes": list(p.notes),
        **p.extra_meta,
    }
    out.mkdir(parents=True, exist_ok=True)
    # an interrupted re-prepare must not leave an old meta.json marking the folder complete
    (out / "meta.json").unlink(missing_ok=True)
    for fname, side in zip(SIDE_FILES, (p.item_side, p.user_side)):
        if side is None:
            (out / fname).unlink(missing_ok=True)  # stale side info from an earlier run
        else:
            atomic_write_json(out / fname, side, indent=None)
    p.data.save(out, extra_meta=meta)
    return out


def repeat_shares(data: SequenceData) -> dict[str, float] | None:
    """Leave-one-out shares of test / validation targets already in the user's history (None: no
    user has 3 items). They decide how much ``eval.repeat_targets`` (keep / exclude) matters."""
    from core.evaluation import repeat_target_shares

    try:
        return {k: round(v, 6) for k, v in repeat_target_shares(data).items()}
    except DataError:
        return None


def summary(p: Prepared, out: Path) -> str:
    d = p.data
    line = f"prepared {p.name}: {d.n_users} users, {d.n_items} items, {d.n_interactions} interactions -> {out}"
    shares = p.extra_meta.get("repeat_targets")
    if shares:
        line += f"\n  repeat targets: {100 * shares['test']:.1f}% of test, {100 * shares['valid']:.1f}% of valid"
    return line

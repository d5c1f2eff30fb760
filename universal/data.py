"""Reading and validating the universal data format.

Inputs (all give the same ``Dataset``):

- ``X.json``: one object ``{"user_data": [...], "item_data": [...], "interactions": [...]}``;
- ``X.jsonl``: one record per line, each with ``"kind": "user" | "item" | "interaction"`` and
  otherwise the record as it would appear in the JSON lists (for data too large for one document);
- a folder with ``users``, ``items`` and ``interactions`` tables (``.csv``, or ``.parquet`` when
  pyarrow is installed): entity columns are ``user_id`` / ``item_id`` and ``<type>.<field>``
  (e.g. ``categorical.country``, ``text.bio``); list values (temporal, multi-valued categorical)
  are JSON strings such as ``"[1, 2, 3]"``; the ``users`` / ``items`` tables are optional (without
  one, that side's entities are the ids of the interactions, with no features).

An entity record holds its id and feature blocks ``{type: {field: value}}``; the types are
``text``, ``categorical``, ``continuous``, ``temporal``, ``image`` and any registered custom type.
Every problem is a ``DataError`` naming the file, the record and the fix.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from core.data.jsonl import iter_jsonl
from core.errors import DataError

BUILTIN_TYPES = ("text", "categorical", "continuous", "temporal", "image")
SECTIONS = {"user": "user_data", "item": "item_data", "interaction": "interactions"}
INTERACTION_KEYS = {"user_id", "item_id", "timestamp", "interaction_type", "rating", "weight"}
TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass
class Entities:
    """One side (users or items): raw ids (index i + 1 <-> ids[i]) and their feature blocks."""

    kind: str  # "user" | "item"
    ids: list
    features: list[dict]  # per entity: {type: {field: value}}
    index: dict = field(default_factory=dict)  # id key -> 1-based index

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, raw) -> int:
        return self.index.get(id_key(raw), 0)


@dataclass
class Dataset:
    users: Entities
    items: Entities
    user_idx: np.ndarray  # [n] 1-based, one row per interaction (duplicates removed)
    item_idx: np.ndarray
    time: np.ndarray  # [n] float seconds; the row order when the data has no timestamps
    has_timestamps: bool
    source: Path
    notes: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def types_present(self) -> set[str]:
        """The feature types some user or item has (``drop_feature_types`` can only drop these)."""
        return {t for side in (self.users, self.items) for feats in side.features for t in feats}


def id_key(raw) -> str:
    """Ids compare by text, so ``7`` in a JSON file and ``"7"`` in a CSV column are one id."""
    return str(raw)


# --------------------------------------------------------------------------- reading
def read_raw(path: str | Path) -> tuple[dict[str, list[dict]], Path]:
    """``{"user_data": [...], "item_data": [...], "interactions": [...]}`` from any input layout."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found; pass --data with a universal-format .json, .jsonl "
                        "or a folder of users/items/interactions tables")
    if path.is_dir():
        return _read_tables(path), path
    if path.suffix == ".jsonl":
        return _read_jsonl(path), path
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: accept a byte-order mark
        if not text.strip():
            raise DataError(f"{path}: file is empty; expected a JSON object with user_data, item_data and interactions")
        raw = json.loads(text)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; the data must be a JSON document") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); fix the file or use .jsonl "
                        "(one record per line)") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object with user_data, item_data and interactions")
    unknown = sorted(set(raw) - set(SECTIONS.values()))
    if unknown:
        raise DataError(f"{path}: unknown top-level key {unknown[0]!r}; expected user_data, item_data, interactions")
    for key in SECTIONS.values():
        if not isinstance(raw.get(key, []), list):
            raise DataError(f"{path}: {key} must be a list of records")
    return {key: raw.get(key, []) for key in SECTIONS.values()}, path


def _read_jsonl(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {key: [] for key in SECTIONS.values()}
    for lineno, obj in iter_jsonl(path):
        kind = obj.pop("kind", None)
        if kind not in SECTIONS:
            raise DataError(f"{path}:{lineno}: 'kind' must be one of user, item, interaction (got {kind!r})")
        out[SECTIONS[kind]].append(obj)
    return out


def _read_tables(folder: Path) -> dict[str, list[dict]]:
    import pandas as pd

    def find(stem: str) -> Path | None:
        hits = [folder / f"{stem}{s}" for s in TABLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
        return hits[0] if hits else None

    def read(p: Path):
        try:
            return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, keep_default_na=True)
        except ImportError:
            raise DataError(f"{p}: reading parquet needs pyarrow (pip install pyarrow), or save the table as CSV") from None
        except Exception as exc:  # pandas raises many types for malformed tables
            raise DataError(f"{p}: not a readable table ({str(exc).splitlines()[0][:160]})") from None

    inter = find("interactions")
    if inter is None:
        raise DataError(f"{folder}: no interactions.csv or interactions.parquet in this folder")
    out = {"interactions": [], "user_data": [], "item_data": []}
    frame = read(inter)
    for col in ("user_id", "item_id"):
        if col not in frame.columns:
            raise DataError(f"{inter}: missing column {col!r}")
    out["interactions"] = [{k: _plain(v) for k, v in row.items() if _plain(v) is not None}
                           for row in frame.to_dict("records")]
    for stem, key, id_col in (("users", "user_data", "user_id"), ("items", "item_data", "item_id")):
        p = find(stem)
        if p is None:  # no table: the entities are the ids the interactions name (first-seen order), featureless
            seen: dict = {}
            for row in out["interactions"]:
                raw = row.get(id_col)
                if isinstance(raw, float) and raw.is_integer():  # an int column that pandas read as float
                    raw = int(raw)
                if raw is not None:
                    seen.setdefault(id_key(raw), raw)
            out[key] = [{id_col: raw} for raw in seen.values()]
            continue
        frame = read(p)
        if id_col not in frame.columns:
            raise DataError(f"{p}: missing column {id_col!r}")
        for lineno, row in enumerate(frame.to_dict("records"), 2):
            rec: dict = {id_col: _plain(row[id_col])}
            for col, value in row.items():
                if col == id_col:
                    continue
                if "." not in col:
                    raise DataError(f"{p}: column {col!r} is not '<type>.<field>' (e.g. categorical.{col})")
                ftype, fname = col.split(".", 1)
                value = _plain(value)
                if value is None:  # an empty cell: the feature is absent, as a missing key in JSON
                    continue
                if isinstance(value, str) and value.startswith("[") and (ftype in ("temporal", "categorical")
                                                                         or ftype not in BUILTIN_TYPES):
                    try:
                        value = json.loads(value)
                    except json.JSONDecodeError:
                        raise DataError(f"{p}:{lineno}: column {col!r} holds {value[:40]!r}, not a JSON list") from None
                rec.setdefault(ftype, {})[fname] = value
            out[key].append(rec)
    return out


def _plain(value):
    """numpy/pandas scalars -> Python values; NaN -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------- validation
def _check_id(raw, where: str, key: str, path: Path):
    if raw is None:
        raise DataError(f"{path}: {where}: missing {key!r}; every record needs one")
    if isinstance(raw, bool) or not isinstance(raw, (int, str, float)) or isinstance(raw, float) and not raw.is_integer():
        raise DataError(f"{path}: {where}: {key} {raw!r} must be an integer or a string")
    return int(raw) if isinstance(raw, float) else raw


def _entities(records: list, kind: str, path: Path, types: Iterable[str]) -> Entities:
    section, id_col = SECTIONS[kind], f"{kind}_id"
    types = tuple(types)
    ids, feats, index = [], [], {}
    for n, rec in enumerate(records):
        where = f"{section}[{n}]"
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {where}: expected an object, got {type(rec).__name__}")
        raw = _check_id(rec.get(id_col), where, id_col, path)
        if id_key(raw) in index:
            raise DataError(f"{path}: {where}: duplicate {id_col} {raw!r}; each {kind} appears once in {section}")
        blocks = {}
        for ftype, block in rec.items():
            if ftype == id_col:
                continue
            if ftype not in types:
                raise DataError(f"{path}: {where}: unknown feature type {ftype!r}; use one of {', '.join(types)} "
                                "or register an encoder for it (pipeline.add_encoder / custom_encoders)")
            if block is None:
                continue
            if not isinstance(block, dict):
                raise DataError(f"{path}: {where}.{ftype} must be an object {{field: value}}, got {type(block).__name__}")
            for fname, value in block.items():
                _check_value(ftype, value, f"{where}.{ftype}.{fname}", path)
            blocks[ftype] = block
        index[id_key(raw)] = len(ids) + 1
        ids.append(raw)
        feats.append(blocks)
    return Entities(kind, ids, feats, index)


def _check_value(ftype: str, value, where: str, path: Path) -> None:
    if value is None:
        return
    scalar = (str, int, float, bool)
    ok = {
        "text": isinstance(value, str),
        "categorical": isinstance(value, scalar) or isinstance(value, list) and all(isinstance(v, scalar) for v in value),
        "continuous": isinstance(value, (int, float)) and not isinstance(value, bool),
        "temporal": isinstance(value, list) and all(isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                                    for v in value),
        "image": isinstance(value, str),
    }.get(ftype, isinstance(value, (int, float)) and not isinstance(value, bool) or isinstance(value, list)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not ok:
        want = {"text": "a string", "categorical": "a string/number or a list of them", "continuous": "a number",
                "temporal": "a list of numbers or item ids", "image": "a file path (image or .npy)"}.get(
            ftype, "a number or a list of numbers")
        raise DataError(f"{path}: {where}: expected {want}, got {json.dumps(value)[:60]}")


def parse_timestamp(value, where: str, path: Path) -> float:
    """ISO-8601 text (naive = UTC) or a number (Unix seconds; milliseconds above 1e11)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise DataError(f"{path}: {where}: timestamp {value!r} is not finite")
        return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            stamp = None
        if stamp is not None:
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    raise DataError(f"{path}: {where}: bad timestamp {value!r}; use ISO-8601 (2024-01-15T10:30:00) or Unix seconds")


def validate(raw: dict[str, list[dict]], path: Path, types: Iterable[str] = BUILTIN_TYPES,
             require_interactions: bool = True) -> Dataset:
    """Raw sections -> ``Dataset``; users or items that appear only in interactions are errors."""
    types = tuple(types)
    users = _entities(raw["user_data"], "user", path, types)
    items = _entities(raw["item_data"], "item", path, types)
    inter = raw["interactions"]
    if require_interactions and not inter:
        raise DataError(f"{path}: no interactions; the model learns from interactions (user_id, item_id, timestamp)")
    if require_interactions and not len(items):
        raise DataError(f"{path}: no item_data; list every item with its item_id (features are optional)")
    u_idx, i_idx, times = np.zeros(len(inter), np.int64), np.zeros(len(inter), np.int64), np.zeros(len(inter))
    stamped = None
    for n, rec in enumerate(inter):
        where = f"interactions[{n}]"
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {where}: expected an object, got {type(rec).__name__}")
        for key, ents in (("user_id", users), ("item_id", items)):
            raw_id = _check_id(rec.get(key), where, key, path)
            idx = ents.lookup(raw_id)
            if not idx:
                raise DataError(f"{path}: {where}: {key} {raw_id!r} is not in {SECTIONS[ents.kind]}; "
                                f"add the {ents.kind} there or drop the interaction")
            (u_idx if key == "user_id" else i_idx)[n] = idx
        has = rec.get("timestamp") is not None
        if stamped is None:
            stamped = has
        elif has != stamped:
            raise DataError(f"{path}: {where}: {'has a' if has else 'missing'} timestamp while the first interaction "
                            f"{'does not' if has else 'has one'}; give every interaction a timestamp or none")
        times[n] = parse_timestamp(rec["timestamp"], where, path) if has else float(n)
    notes = []
    if inter and not stamped:
        notes.append(f"{path.name}: interactions have no timestamps; their order in the file is their time order")
    # a repeated (user, item) pair counts once, at its first time
    order = np.lexsort((np.arange(len(inter)), times, i_idx, u_idx))
    pair = u_idx[order] * (len(items) + 1) + i_idx[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    keep = np.sort(order[first])
    if len(keep) < len(inter):
        notes.append(f"{path.name}: {len(inter) - len(keep)} repeated (user, item) interactions count once (the first)")
    return Dataset(users, items, u_idx[keep], i_idx[keep], times[keep], bool(stamped), path, notes)


def load_dataset(path: str | Path, types: Iterable[str] = BUILTIN_TYPES, require_interactions: bool = True) -> Dataset:
    raw, path = read_raw(path)
    return validate(raw, path, types, require_interactions)


def subsample_users(data: Dataset, max_users: int, seed: int) -> Dataset:
    """A fixed-seed sample of users with their interactions (items are all kept)."""
    if not max_users or max_users >= data.n_users:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data.n_users, max_users, replace=False)) + 1
    new_index = np.zeros(data.n_users + 1, np.int64)
    new_index[keep] = np.arange(1, len(keep) + 1)
    rows = new_index[data.user_idx] > 0
    users = Entities("user", [data.users.ids[k - 1] for k in keep], [data.users.features[k - 1] for k in keep])
    users.index = {id_key(u): n + 1 for n, u in enumerate(users.ids)}
    return Dataset(users, data.items, new_index[data.user_idx[rows]], data.item_idx[rows], data.time[rows],
                   data.has_timestamps, data.source,
                   data.notes + [f"data.max_users={max_users}: a fixed-seed sample of {len(keep)} of {data.n_users} users"])

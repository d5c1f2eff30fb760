"""Strict loaders for the Persona4Rec JSONL files (Amazon Books, Yelp, and the synthetic default).

Every record is checked as it is read: a missing or misspelt key, a value of the wrong type, a
duplicate id or a selected persona that does not exist stops the run with
``<file>:<line>: ...`` naming the key (nested keys as ``reviews[3].rating``). A malformed JSON
line is an error too (``core.data.jsonl``); nothing is skipped silently.

Yelp names the item ``business_id``; its files as published also use ``item_id``, so the Yelp
loaders take either (``business_id`` first). Amazon and the synthetic data use ``item_id``.
"""
from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core.data.jsonl import iter_jsonl, require
from core.errors import DataError

DATASETS = ("amazon", "yelp", "synthetic")
PERSONA_KEYS = ("unique_persona_id", "Name", "Description", "Item_Summary", "Preference_Rationale")
REVIEW_KEYS = ("user_id", "review_title", "summary", "extracted", "rating", "timestamp")
YELP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Persona:
    uid: str  # unique_persona_id, e.g. "0007554850_P1"
    item_id: str
    pid: str  # the id within its item ("P1"); what 4_selected_personas refers to
    name: str
    description: str
    item_summary: str
    rationale: str


@dataclass(frozen=True)
class Review:
    user_id: str
    item_id: str
    title: str
    summary: str
    extracted: dict  # facet -> str | None (the "*_reason" companions included)
    rating: float
    timestamp: int | str  # Amazon: epoch milliseconds; Yelp: "YYYY-MM-DD HH:MM:SS" (sorts as text)


@dataclass(frozen=True)
class Selection:
    user_id: str
    item_id: str  # target_item_id
    persona: Persona
    line: int
    source: str  # "persona_file", or "embedded" when the target item is absent from the persona file


@dataclass(frozen=True)
class ItemInfo:
    title: str
    summary: str


@dataclass
class PersonaData:
    """Everything one data.yaml points at, loaded and checked."""
    dataset: str
    personas: dict[str, list[Persona]] = field(default_factory=dict)  # item -> personas
    history: dict[str, list[Review]] = field(default_factory=dict)  # user -> reviews, oldest first
    selections: list[Selection] | None = None
    items: dict[str, ItemInfo] = field(default_factory=dict)  # item_summary file
    aspects: dict[str, Counter] = field(default_factory=dict)  # item -> facet-value counts (aspects file)
    files: dict[str, Path] = field(default_factory=dict)


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    return dataset


def item_keys(dataset: str) -> tuple[str, ...]:
    return ("business_id", "item_id") if dataset == "yelp" else ("item_id",)


def _item_id(obj: dict, dataset: str, path, lineno: int, where: str = "") -> str:
    keys = item_keys(dataset)
    for key in keys:
        if key in obj:
            return require(obj, key, str, path, lineno, where)
    alt = f" (or {', '.join(map(repr, keys[1:]))})" if len(keys) > 1 else ""
    raise DataError(f"{path}:{lineno}: missing key {where + keys[0]!r}{alt}")


def _text(obj: dict, key: str, path, lineno: int, where: str = "") -> str:
    return require(obj, key, str, path, lineno, where)


# --------------------------------------------------------------------------- personas
def _persona(obj, item_id: str, path, lineno: int, where: str) -> Persona:
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: {where.rstrip('.')} should be an object, got {type(obj).__name__}")
    uid = _text(obj, "unique_persona_id", path, lineno, where)
    # "ID" is the per-item id the selections use; older files only carry the unique id
    pid = _text(obj, "ID", path, lineno, where) if "ID" in obj else uid.removeprefix(f"{item_id}_")
    return Persona(uid=uid, item_id=item_id, pid=pid,
                   name=_text(obj, "Name", path, lineno, where),
                   description=_text(obj, "Description", path, lineno, where),
                   item_summary=_text(obj, "Item_Summary", path, lineno, where),
                   rationale=_text(obj, "Preference_Rationale", path, lineno, where))


def load_personas(path: str | Path, dataset: str = "amazon") -> dict[str, list[Persona]]:
    """``3.5_persona_with_summary.jsonl`` -> ``{item_id: [Persona, ...]}`` (file order)."""
    check_dataset(dataset)
    out: dict[str, list[Persona]] = {}
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        item = _item_id(obj, dataset, path, lineno)
        if item in out:
            raise DataError(f"{path}:{lineno}: item {item!r} appears twice (first on line {seen[item]}); "
                            "merge its personas into one line")
        seen[item] = lineno
        records = require(obj, "personas", list, path, lineno)
        personas = [_persona(p, item, path, lineno, f"personas[{j}].") for j, p in enumerate(records)]
        dup = [k for ids in (Counter(p.uid for p in personas), Counter(p.pid for p in personas))
               for k, n in ids.items() if n > 1]
        if dup:
            raise DataError(f"{path}:{lineno}: key 'personas': persona id {dup[0]!r} is used twice for item {item!r}")
        out[item] = personas
    return out


# --------------------------------------------------------------------------- histories
def _review(obj, user: str, dataset: str, path, lineno: int, where: str) -> Review:
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: {where.rstrip('.')} should be an object, got {type(obj).__name__}")
    r_user = _text(obj, "user_id", path, lineno, where)
    if r_user != user:
        raise DataError(f"{path}:{lineno}: key {where + 'user_id'!r} is {r_user!r} but the line belongs to {user!r}")
    item = _item_id(obj, dataset, path, lineno, where)
    extracted = require(obj, "extracted", dict, path, lineno, where)
    for facet, value in extracted.items():
        if value is not None and not isinstance(value, str):
            raise DataError(f"{path}:{lineno}: key {where}extracted.{facet} should be str or null, "
                            f"got {type(value).__name__}")
    rating = float(require(obj, "rating", (int, float), path, lineno, where))
    if dataset == "yelp":
        ts = require(obj, "timestamp", str, path, lineno, where)
        try:
            _dt.datetime.strptime(ts, YELP_TIME_FORMAT)
        except ValueError:
            raise DataError(f"{path}:{lineno}: key {where + 'timestamp'!r} is {ts!r}, expected "
                            "'YYYY-MM-DD HH:MM:SS'") from None
    else:  # Amazon Reviews 2023 (and the synthetic data): integer milliseconds since the epoch
        ts = require(obj, "timestamp", int, path, lineno, where)
    return Review(user_id=user, item_id=item, title=_text(obj, "review_title", path, lineno, where),
                  summary=_text(obj, "summary", path, lineno, where), extracted=dict(extracted),
                  rating=rating, timestamp=ts)


def load_history(path: str | Path, dataset: str = "amazon") -> dict[str, list[Review]]:
    """``3.5_history_loo.jsonl`` -> ``{user_id: [Review, ...]}`` sorted oldest first."""
    check_dataset(dataset)
    out: dict[str, list[Review]] = {}
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        user = _text(obj, "user_id", path, lineno)
        if user in out:
            raise DataError(f"{path}:{lineno}: user {user!r} appears twice (first on line {seen[user]})")
        seen[user] = lineno
        records = require(obj, "reviews", list, path, lineno)
        reviews = [_review(r, user, dataset, path, lineno, f"reviews[{j}].") for j, r in enumerate(records)]
        out[user] = sorted(reviews, key=lambda r: r.timestamp)  # stable: equal times keep file order
    return out


# --------------------------------------------------------------------------- selections
def load_selections(path: str | Path, personas: dict[str, list[Persona]], dataset: str = "amazon",
                    persona_path: str | Path = "the persona file") -> list[Selection]:
    """``4_selected_personas.jsonl`` with every ``selected_persona_id`` resolved to a Persona.

    A target item listed in the persona file must own the selected id (``P2`` or its unique id
    ``<item>_P2``), else the line is an error. A target item missing from the persona file (the
    shipped samples do not join) falls back to the persona copied into the line itself
    (``selected_persona``), whose ``ID`` must match; without it the line is an error.
    """
    check_dataset(dataset)
    out = []
    for lineno, obj in iter_jsonl(path):
        user = _text(obj, "user_id", path, lineno)
        item = _text(obj, "target_item_id", path, lineno)
        sid = _text(obj, "selected_persona_id", path, lineno)
        own = personas.get(item)
        if own is not None:
            match = [p for p in own if sid in (p.pid, p.uid)]
            if not match:
                have = ", ".join(p.pid for p in own)
                raise DataError(f"{path}:{lineno}: key 'selected_persona_id': persona {sid!r} does not exist for "
                                f"item {item!r} in {persona_path} (it has {have})")
            out.append(Selection(user, item, match[0], lineno, "persona_file"))
            continue
        if "selected_persona" not in obj:
            raise DataError(f"{path}:{lineno}: key 'target_item_id': item {item!r} has no personas in "
                            f"{persona_path} and the line has no 'selected_persona' to fall back on")
        emb = require(obj, "selected_persona", dict, path, lineno)
        pid = _text(emb, "ID", path, lineno, "selected_persona.")
        if sid not in (pid, f"{item}_{pid}"):
            raise DataError(f"{path}:{lineno}: key 'selected_persona_id' is {sid!r} but selected_persona.ID is {pid!r}")
        persona = Persona(uid=f"{item}_{pid}", item_id=item, pid=pid,
                          name=_text(emb, "Name", path, lineno, "selected_persona."),
                          description=_text(emb, "Description", path, lineno, "selected_persona."),
                          item_summary=emb["Item_Summary"] if isinstance(emb.get("Item_Summary"), str) else "",
                          rationale=_text(emb, "Preference_Rationale", path, lineno, "selected_persona."))
        out.append(Selection(user, item, persona, lineno, "embedded"))
    return out


# --------------------------------------------------------------------------- item side
def _items_once(path: str | Path, dataset: str):
    """(item id, line number, object) of each line of a per-item JSONL file; an item twice is an error."""
    check_dataset(dataset)
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        item = _item_id(obj, dataset, path, lineno)
        if item in seen:
            raise DataError(f"{path}:{lineno}: item {item!r} appears twice")
        seen.add(item)
        yield item, lineno, obj


def load_item_summaries(path: str | Path, dataset: str = "amazon") -> dict[str, ItemInfo]:
    """``2_summary.jsonl`` (or ``2.5_grouped.jsonl``) -> ``{item_id: ItemInfo(title, summary)}``."""
    return {item: ItemInfo(_text(obj, "item_title", path, lineno), _text(obj, "item_summary", path, lineno))
            for item, lineno, obj in _items_once(path, dataset)}


def load_aspects(path: str | Path, dataset: str = "amazon") -> dict[str, Counter]:
    """``2.5_grouped.jsonl`` -> ``{item_id: Counter("facet: value")}`` over the item's reviews.

    Only the facet values are kept (not the ``*_reason`` texts or the review bodies): they are what
    an item's aspect text is built from, and the file can be large.
    """
    out: dict[str, Counter] = {}
    for item, lineno, obj in _items_once(path, dataset):
        counts: Counter = Counter()
        for j, rec in enumerate(require(obj, "aspects", list, path, lineno)):
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: aspects[{j}] should be an object, got {type(rec).__name__}")
            facets = require(rec, "extracted_aspects", dict, path, lineno, f"aspects[{j}].")
            for facet, value in facets.items():
                if isinstance(value, str) and value.strip() and not facet.endswith("_reason"):
                    counts[f"{facet.replace('_', ' ')}: {value.strip()}"] += 1
        out[item] = counts
    return out


# --------------------------------------------------------------------------- all at once
def load_data(files: dict[str, Path | None], dataset: str, need: tuple[str, ...] = (),
              with_selections: bool = False) -> PersonaData:
    """Load the files a stage needs. ``files`` maps data.yaml keys to resolved paths (or None);
    a key in ``need`` that is unset is an error saying which data.yaml key to fill in."""
    check_dataset(dataset)
    for key in need:
        if not files.get(key):
            raise DataError(f"data config: key {key!r} is required for this step; set it in data.yaml "
                            f"or pass --override \"{key}=PATH\"")
    data = PersonaData(dataset=dataset, files={k: Path(v) for k, v in files.items() if v})
    if files.get("persona"):
        data.personas = load_personas(files["persona"], dataset)
    if files.get("loo_history"):
        data.history = load_history(files["loo_history"], dataset)
    if files.get("item_summary"):
        data.items = load_item_summaries(files["item_summary"], dataset)
    if files.get("aspects"):
        data.aspects = load_aspects(files["aspects"], dataset)
    if with_selections and files.get("selected"):
        data.selections = load_selections(files["selected"], data.personas, dataset, files.get("persona") or "the persona file")
    return data

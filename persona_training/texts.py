"""Text builders: what the encoder reads for a persona, an interaction, a user and an item.

- Persona text: the chosen fields, ``N`` Name, ``D`` Description, ``I`` Item_Summary,
  ``P`` Preference_Rationale (``fields: "N,D,I"`` or the full names).
- Interaction text: review title + (``summary`` mode) the item summary of the review or
  (``aspects`` mode) the extracted preference facets, + the rating.
- A user is the list of their most recent ``max_history`` interaction texts; the encoder
  averages their embeddings (see ``persona_training.encoder``).
- Training pairs: (user history, text of the persona selected for the target item).
"""
from __future__ import annotations

import zlib
from typing import NamedTuple, Sequence

from core.errors import ConfigError, DataError
from persona_training.schema import Persona, PersonaData, Review

FIELD_CODES = {"N": "Name", "D": "Description", "I": "Item_Summary", "P": "Preference_Rationale"}
MODES = ("summary", "aspects")
PAIR_SOURCES = ("auto", "selected", "next_item")
FALLBACKS = ("none", "summary")


def parse_fields(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"N,D,I"`` / ``["Name", "Description"]`` -> ``("N", "D", "I")`` (order kept, repeats dropped)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    by_name = {v.lower(): k for k, v in FIELD_CODES.items()} | {k.lower(): k for k in FIELD_CODES}
    out: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        code = by_name.get(part.lower())
        if code is None:
            raise ConfigError(f"persona field {part!r}: use N (Name), D (Description), I (Item_Summary) "
                              "or P (Preference_Rationale), e.g. fields: \"N,D,I\"")
        if code not in out:
            out.append(code)
    if not out:
        raise ConfigError(f"persona fields {spec!r} name no field; e.g. fields: \"N,D,I\"")
    return tuple(out)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use summary or aspects")
    return mode


def persona_text(p: Persona, fields: str | Sequence[str] = "N,D,I") -> str:
    codes = parse_fields(fields)
    parts = {"N": f"{p.name.strip()}.", "D": p.description.strip(),
             "I": f"Item: {p.item_summary.strip()}" if p.item_summary.strip() else "",
             "P": f"Why: {p.rationale.strip()}" if p.rationale.strip() else ""}
    return " ".join(parts[c] for c in codes if parts[c])


def facet_text(extracted: dict) -> str:
    """``{"category_preference": "Thrillers", "usage_context": None, ...}`` -> ``"category preference: Thrillers"``
    (the ``*_reason`` explanations and empty facets are left out)."""
    return "; ".join(f"{k.replace('_', ' ')}: {v.strip()}" for k, v in extracted.items()
                     if isinstance(v, str) and v.strip() and not k.endswith("_reason"))


def interaction_text(r: Review, mode: str = "summary") -> str:
    body = facet_text(r.extracted) if check_mode(mode) == "aspects" else ""
    body = body or r.summary.strip()  # a review with no facet at all still says what the item is
    title = r.title.strip()
    return " ".join(x for x in (f"{title}." if title else "", body, f"Rating: {r.rating:g}/5.") if x)


def history_texts(reviews: Sequence[Review], mode: str = "summary", max_history: int = 0,
                  exclude_items: Sequence[str] = ()) -> list[str]:
    """Interaction texts of the ``max_history`` most recent reviews (0 = all), oldest first;
    reviews of ``exclude_items`` (the held-out target) never enter."""
    kept = [r for r in reviews if r.item_id not in set(exclude_items)]
    if max_history > 0:
        kept = kept[-max_history:]
    return [interaction_text(r, mode) for r in kept]


# --------------------------------------------------------------------------- item side
def review_summaries(data: PersonaData) -> dict[str, str]:
    """Item -> the item summary carried by its most recent review in the history (the upstream
    reviews hold the LLM's summary of the item, not of the review)."""
    out: dict[str, tuple] = {}
    for reviews in data.history.values():
        for r in reviews:
            if r.summary.strip() and (r.item_id not in out or r.timestamp >= out[r.item_id][0]):
                out[r.item_id] = (r.timestamp, r.summary.strip())
    return {item: s for item, (_t, s) in out.items()}


def item_fallback_text(item_id: str, data: PersonaData, mode: str = "summary",
                       summaries: dict[str, str] | None = None, top_facets: int = 8) -> str | None:
    """Text of an item without personas: its aspect facets (``aspects`` mode, when the aspects
    file is loaded), else title + summary from the item_summary file, else the summary its reviews
    carry. None when nothing is known about the item."""
    if check_mode(mode) == "aspects" and data.aspects.get(item_id):
        return "; ".join(f for f, _n in data.aspects[item_id].most_common(top_facets))
    info = data.items.get(item_id)
    if info is not None and (info.title.strip() or info.summary.strip()):
        return " ".join(x for x in (f"{info.title.strip()}." if info.title.strip() else "", info.summary.strip()) if x)
    if summaries is None:
        summaries = review_summaries(data)
    return summaries.get(item_id)


def item_texts(data: PersonaData, fields: str | Sequence[str] = "N,D,I", mode: str = "summary",
               fallback: str = "none") -> dict[str, list[tuple[str, str]]]:
    """Item -> ``[(row id, text), ...]``: one row per persona (row id = unique_persona_id); with
    ``fallback="summary"`` an item known only from summaries/aspects/reviews gets one row
    ``<item>#summary`` with ``item_fallback_text``."""
    if fallback not in FALLBACKS:
        raise ConfigError(f"item_fallback {fallback!r}: use none or summary")
    out = {item: [(p.uid, persona_text(p, fields)) for p in ps] for item, ps in data.personas.items() if ps}
    if fallback == "summary":
        summaries = review_summaries(data)
        for item in [*data.items, *data.aspects, *summaries]:
            if item not in out:
                text = item_fallback_text(item, data, mode, summaries)
                if text:
                    out[item] = [(f"{item}#summary", text)]
    return out


# --------------------------------------------------------------------------- training pairs
class Pair(NamedTuple):
    history: list[str]  # interaction texts, oldest first
    target: str  # persona (or item) text
    group: str  # pairs with the same group are never each other's negatives (same target item)
    user_id: str


def _pick(personas: list[Persona], user: str, item: str, seed: int) -> Persona:
    # deterministic across runs and machines (Python's str hash is salted per process)
    return personas[zlib.crc32(f"{seed}:{user}:{item}".encode()) % len(personas)]


def build_pairs(data: PersonaData, *, mode: str = "summary", fields: str | Sequence[str] = "N,D,I",
                max_history: int = 20, source: str = "auto", seed: int = 0) -> tuple[list[Pair], dict]:
    """Training pairs and a count of what was used and skipped.

    ``selected``: one pair per line of the selections file whose user has a history: the
    user's interactions without the target item, and the selected persona's text.
    ``next_item``: for files that do not join (the shipped samples), each history user's last
    interaction is the target: that item's persona (one, picked by a fixed hash) or, without
    personas, its summary; the earlier interactions are the history.
    ``auto``: ``selected`` when it yields at least one pair, else ``next_item``.
    """
    if source not in PAIR_SOURCES:
        raise ConfigError(f"pair_source {source!r}: use auto, selected or next_item")
    check_mode(mode)
    parse_fields(fields)
    stats: dict = {"source": source}
    pairs: list[Pair] = []
    if source in ("auto", "selected"):
        if data.selections is None:
            if source == "selected":
                raise DataError("pair_source=selected needs the 'selected' file (4_selected_personas.jsonl) in data.yaml")
        else:
            no_user = empty = embedded = 0
            for sel in data.selections:
                reviews = data.history.get(sel.user_id)
                if reviews is None:
                    no_user += 1
                    continue
                hist = history_texts(reviews, mode, max_history, exclude_items=[sel.item_id])
                if not hist:
                    empty += 1
                    continue
                embedded += sel.source == "embedded"
                pairs.append(Pair(hist, persona_text(sel.persona, fields), sel.item_id, sel.user_id))
            stats.update(selections=len(data.selections), users_without_history=no_user,
                         empty_history=empty, embedded_personas=embedded)
            if pairs or source == "selected":
                if not pairs:
                    raise DataError(
                        f"{data.files.get('selected')}: none of its {len(data.selections)} users has a history in "
                        f"{data.files.get('loo_history')}; the files must come from the same run "
                        "(or use pair_source=next_item)")
                stats.update(source="selected", pairs=len(pairs))
                return pairs, stats
    summaries = None
    no_text = short = 0
    for user, reviews in data.history.items():
        if len(reviews) < 2:
            short += 1
            continue
        target = reviews[-1].item_id
        own = data.personas.get(target)
        if own:
            text = persona_text(_pick(own, user, target, seed), fields)
        else:
            if summaries is None:
                summaries = review_summaries(data)
            text = item_fallback_text(target, data, mode, summaries)
        if not text:
            no_text += 1
            continue
        hist = history_texts(reviews[:-1], mode, max_history, exclude_items=[target])
        if not hist:  # every earlier review was of the target item itself
            short += 1
            continue
        pairs.append(Pair(hist, text, target, user))
    stats.update(source="next_item", pairs=len(pairs), users_with_one_review=short, targets_without_text=no_text)
    if not pairs:
        raise DataError(f"{data.files.get('loo_history')}: no user has two or more reviews to make a training pair from")
    return pairs, stats

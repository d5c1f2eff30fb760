"""Feature schema (fitted on training data only) and per-entity feature tables.

``fit_schema`` looks at every user and item record to find the feature fields, and at the
*training* entities alone (those in training interactions) for anything learned from values:
category vocabularies, normalization statistics of continuous values and numeric series.
The schema is plain data, stored in the checkpoint, so inference featurizes new records the
same way. ``build_tables`` turns records into tensors with one row per entity (row 0 = an
entity with every feature missing), which the towers gather by index.

Spec kinds: ``text`` (all text fields of a tower), ``categorical`` (all categorical fields),
``continuous`` (all continuous fields), ``temporal_items`` / ``temporal_series`` (one temporal
field each), ``image`` / ``image_vector`` (one image field each) and ``custom`` (a registered type).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from core.errors import ConfigError, DataError
from universal.config import GLOVE_PREFIXES
from universal.data import BUILTIN_TYPES, Dataset, Entities, id_key

SERIES_STATS = ("log_length", "mean", "std", "last", "min", "max")


def _value_key(value) -> str:
    return value if isinstance(value, str) else repr(value)


def _hash_row(field: str, key: str, size: int) -> int:
    # a stable hash (Python's hash() changes between processes), row 0 stays the unknown value
    return 1 + int.from_bytes(hashlib.blake2b(f"{field}\0{key}".encode(), digest_size=8).digest(), "little") % size


def _fields(entities: Entities, ftype: str) -> list[str]:
    names: dict[str, None] = {}
    for blocks in entities.features:
        for name in blocks.get(ftype, {}):
            names.setdefault(name, None)
    return list(names)


def _values(entities: Entities, ftype: str, name: str, rows=None):
    rows = range(len(entities)) if rows is None else rows
    return [(r, entities.features[r].get(ftype, {}).get(name)) for r in rows]


def _series_stats(values: list) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return np.array([math.log1p(len(x)), x.mean(), x.std(), x[-1], x.min(), x.max()])


def _mean_std(rows: np.ndarray) -> tuple[list, list]:
    if len(rows) == 0:
        return [0.0] * rows.shape[1], [1.0] * rows.shape[1]
    mean, std = rows.mean(0), rows.std(0)
    return mean.tolist(), np.where(std > 1e-12, std, 1.0).tolist()


def image_root(ic, source: Path) -> Path:
    """Relative image paths: from ``image_encoder_config.root``, else beside the data (a folder of tables: in it)."""
    return Path(ic.root) if ic.root else source if source.is_dir() else source.parent


def resolve_path(value: str, root: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


# --------------------------------------------------------------------------- fitting
def fit_schema(data: Dataset, train_rows: np.ndarray, cfg, custom_types: dict[str, str], log=print) -> dict:
    """``{"user": [spec, ...], "item": [spec, ...], "notes": [...]}``; values from training entities only."""
    schema: dict = {"notes": []}
    off = set(cfg.drop_feature_types)
    unknown = sorted(off - set(feature_types(custom_types)))
    if unknown:
        raise ConfigError(f"drop_feature_types: unknown feature type {unknown[0]!r}; use one of "
                          f"{', '.join(feature_types(custom_types))}")
    if off:
        schema["notes"].append(f"notice: feature types {', '.join(sorted(off))} are left out of both towers "
                               "(drop_feature_types)")
    for tower, ents, idx in (("user", data.users, data.user_idx), ("item", data.items, data.item_idx)):
        train_entities = np.unique(idx[train_rows]) - 1  # 0-based rows of entities seen in training
        specs = []
        specs += _fit_text(ents, cfg) if "text" not in off else []
        specs += _fit_categorical(ents, train_entities, cfg) if "categorical" not in off else []
        specs += _fit_continuous(ents, train_entities, cfg) if "continuous" not in off else []
        if "temporal" not in off:
            specs += _fit_temporal(tower, ents, data.items, train_entities, cfg, schema["notes"], data.source)
        specs += _fit_image(ents, cfg, data.source) if "image" not in off else []
        for ftype, encoder in custom_types.items():
            if ftype in off:
                continue
            for name in _fields(ents, ftype):
                dims = {1 if not isinstance(v, list) else len(v) for _, v in _values(ents, ftype, name) if v is not None}
                if len(dims) != 1:
                    raise DataError(f"{data.source}: {tower} field {ftype}.{name} has vectors of lengths "
                                    f"{sorted(dims)}; a custom feature needs one length")
                specs.append({"name": f"{ftype}.{name}", "kind": "custom", "type": ftype, "fields": [name],
                              "dim": dims.pop(), "encoder": encoder})
        schema[tower] = specs
    for note in schema["notes"]:
        log(note)
    return schema


def _fit_text(ents: Entities, cfg) -> list[dict]:
    names = _fields(ents, "text")
    return [{"name": "text", "kind": "text", "fields": names}] if names else []


def _fit_categorical(ents: Entities, train_entities: np.ndarray, cfg) -> list[dict]:
    names = _fields(ents, "categorical")
    if not names:
        return []
    size = cfg.categorical_encoder_config.hash_vocab_size
    vocab, widths, max_values = {}, {}, 1
    for name in names:
        seen: dict[str, int] = {}
        for _, value in _values(ents, "categorical", name, train_entities):
            for v in (value if isinstance(value, list) else [] if value is None else [value]):
                key = _value_key(v)
                if key not in seen:
                    seen[key] = _hash_row(name, key, size) if size else len(seen) + 1
        vocab[name] = seen
        widths[name] = (size if size else len(seen)) + 1  # + row 0 = unknown or missing
        for _, value in _values(ents, "categorical", name):
            if isinstance(value, list):
                max_values = max(max_values, len(value))
    return [{"name": "categorical", "kind": "categorical", "fields": names, "vocab": vocab, "rows": widths,
             "max_values": max_values}]


def _fit_continuous(ents: Entities, train_entities: np.ndarray, cfg) -> list[dict]:
    names = _fields(ents, "continuous")
    if not names:
        return []
    mean, std = [], []
    for name in names:
        vals = np.array([float(v) for _, v in _values(ents, "continuous", name, train_entities)
                         if v is not None and math.isfinite(float(v))])
        m, s = _mean_std(vals.reshape(-1, 1)) if cfg.continuous_encoder_config.normalize else ([0.0], [1.0])
        mean.append(m[0])
        std.append(s[0])
    return [{"name": "continuous", "kind": "continuous", "fields": names, "mean": mean, "std": std}]


def _is_item_list(ents: Entities, name: str, items: Entities) -> bool:
    values = [v for _, v in _values(ents, "temporal", name) if v]
    return bool(values) and all(id_key(x) in items.index for v in values for x in v)


def _fit_temporal(tower: str, ents: Entities, items: Entities, train_entities: np.ndarray, cfg, notes: list,
                  source: Path) -> list[dict]:
    tc = cfg.temporal_encoder_config
    specs = []
    for name in _fields(ents, "temporal"):
        if _is_item_list(ents, name, items):
            if tower == "user" and tc.user_item_lists == "drop":
                notes.append(f"notice: user feature temporal.{name} lists item ids; dropped (user_item_lists=drop)")
                continue
            if not tc.enable_item_lookup:
                notes.append(f"notice: temporal.{name} lists item ids but enable_item_lookup is false; the feature is dropped")
                continue
            if tower == "user" and tc.user_item_lists == "keep":
                notes.append(f"warning: user feature temporal.{name} lists item ids and is used as given "
                             "(user_item_lists=keep): held-out items in it leak the labels")
            elif tower == "user":
                notes.append(f"notice: user feature temporal.{name} lists item ids; held-out items (and, in training, "
                             "the item being predicted) are removed from it so it cannot leak the labels")
            specs.append({"name": f"temporal.{name}", "kind": "temporal_items", "fields": [name]})
            continue
        rows = []
        for r, v in _values(ents, "temporal", name):
            if v and not all(isinstance(x, (int, float)) for x in v):
                raise DataError(f"{source}: {tower} {ents.ids[r]!r}: temporal.{name} mixes numbers and text that are "
                                "not item ids; use numbers (a series) or item ids only")
        for _, v in _values(ents, "temporal", name, train_entities):
            if v:
                rows.append(_series_stats(v))
        mean, std = _mean_std(np.array(rows).reshape(-1, len(SERIES_STATS)))
        specs.append({"name": f"temporal.{name}", "kind": "temporal_series", "fields": [name], "mean": mean, "std": std})
    return specs


def _fit_image(ents: Entities, cfg, source: Path) -> list[dict]:
    ic = cfg.image_encoder_config
    root = image_root(ic, source)
    specs = []
    for name in _fields(ents, "image"):
        paths = [v for _, v in _values(ents, "image", name) if v]
        npy = [p.endswith(".npy") for p in paths]
        if any(npy) and not all(npy):
            raise DataError(f"{source}: image.{name} mixes .npy feature vectors and image files; use one kind per field")
        if paths and all(npy):
            dim = 0
            for p in paths:
                f = resolve_path(p, root)
                if f.is_file():
                    dim = int(np.load(f, allow_pickle=False).size)
                    break
            if not dim:
                raise DataError(f"{source}: image.{name}: none of the .npy files exist (first {paths[0]!r}); "
                                "fix the paths or image_encoder_config.root")
            specs.append({"name": f"image.{name}", "kind": "image_vector", "fields": [name], "dim": dim})
        else:
            specs.append({"name": f"image.{name}", "kind": "image", "fields": [name], "size": ic.image_size})
    return specs


def feature_types(custom_types) -> tuple[str, ...]:
    return BUILTIN_TYPES + tuple(custom_types)


# --------------------------------------------------------------------------- tables
def build_tables(specs: list[dict], ents: Entities, cfg, *, item_index, text_cache: Path | None,
                 source: Path, drop_items: dict[int, set] | None = None, log=print) -> dict[str, torch.Tensor]:
    """Tensors of every spec, one row per entity plus row 0 (all missing).

    ``item_index(raw id) -> int`` maps item ids in temporal lists to the model's item rows (0 =
    unknown, dropped); ``drop_items[row]`` are item rows removed from that entity's item lists
    (the held-out items of a user)."""
    n = len(ents) + 1
    out: dict[str, torch.Tensor] = {}
    for spec in specs:
        key, kind, names = spec["name"], spec["kind"], spec["fields"]
        if kind == "text":
            out.update(_text_table(key, names, ents, cfg, text_cache, log))
        elif kind == "categorical":
            k = spec["max_values"]
            idx = np.zeros((n, len(names), k), np.int64)
            mask = np.zeros((n, len(names), k), bool)
            mask[:, :, 0] = True  # a missing value reads the unknown row
            for f, name in enumerate(names):
                vocab = spec["vocab"][name]
                for r, value in _values(ents, "categorical", name):
                    vals = value if isinstance(value, list) else [] if value is None else [value]
                    for j, v in enumerate(vals[:k]):
                        idx[r + 1, f, j] = vocab.get(_value_key(v), 0)
                        mask[r + 1, f, j] = True
            out[f"{key}/idx"], out[f"{key}/mask"] = torch.from_numpy(idx), torch.from_numpy(mask)
        elif kind == "continuous":
            x = np.zeros((n, len(names)), np.float32)
            present = np.zeros((n, len(names)), bool)
            for f, name in enumerate(names):
                for r, v in _values(ents, "continuous", name):
                    if v is not None and math.isfinite(float(v)):
                        x[r + 1, f] = (float(v) - spec["mean"][f]) / spec["std"][f]
                        present[r + 1, f] = True
            out[f"{key}/x"], out[f"{key}/present"] = torch.from_numpy(x), torch.from_numpy(present)
        elif kind == "temporal_items":
            width = cfg.temporal_encoder_config.max_length
            ids = np.zeros((n, width), np.int64)
            for r, v in _values(ents, "temporal", names[0]):
                rows = [item_index(x) for x in (v or [])]
                drop = drop_items.get(r + 1, ()) if drop_items else ()
                rows = [x for x in rows if x and x not in drop][-width:]
                ids[r + 1, :len(rows)] = rows
            out[f"{key}/ids"] = torch.from_numpy(ids)
        elif kind == "temporal_series":
            x = np.zeros((n, len(SERIES_STATS)), np.float32)
            present = np.zeros(n, bool)
            for r, v in _values(ents, "temporal", names[0]):
                if v:
                    x[r + 1] = (_series_stats(v) - np.array(spec["mean"])) / np.array(spec["std"])
                    present[r + 1] = True
            out[f"{key}/x"], out[f"{key}/present"] = torch.from_numpy(x), torch.from_numpy(present)
        elif kind in ("image", "image_vector"):
            out.update(_image_table(spec, ents, cfg, source, log))
        elif kind == "custom":
            x = np.zeros((n, spec["dim"]), np.float32)
            present = np.zeros(n, bool)
            for r, v in _values(ents, spec["type"], names[0]):
                if v is not None:
                    vec = np.asarray(v if isinstance(v, list) else [v], np.float32)
                    if vec.size != spec["dim"]:
                        raise DataError(f"{source}: {ents.kind} {ents.ids[r]!r}: {key} has {vec.size} values, "
                                        f"the model expects {spec['dim']}")
                    x[r + 1], present[r + 1] = vec, True
            out[f"{key}/x"], out[f"{key}/present"] = torch.from_numpy(x), torch.from_numpy(present)
        else:  # a schema from a newer version
            raise DataError(f"{source}: feature {key!r} has unknown kind {kind!r}; retrain with this version")
    return out


def text_model(cfg, log=print) -> str:
    name = cfg.text_encoder_config.model_name
    if name.startswith(GLOVE_PREFIXES):
        log(f"notice: text model {name!r} (gensim download) is not available offline; using the shipped "
            "all-MiniLM-L6-v2 sentence encoder instead")
        return "default"
    return name


def _text_table(key: str, names: list[str], ents: Entities, cfg, cache: Path | None, log) -> dict:
    from core.text import encode_texts

    texts, where = [], []
    for f, name in enumerate(names):
        for r, v in _values(ents, "text", name):
            if v is not None and v.strip():
                texts.append(v)
                where.append((r + 1, f))
    vecs = encode_texts(texts, model=text_model(cfg, log=lambda *_: None), batch_size=cfg.text_encoder_config.batch_size,
                        cache_dir=cache if cache is not None else False, show_progress=len(texts) > 2000)
    n = len(ents) + 1
    x = np.zeros((n, len(names), vecs.shape[1] if len(vecs) else _text_dim(cfg)), np.float32)
    present = np.zeros((n, len(names)), bool)
    for (r, f), vec in zip(where, vecs):
        x[r, f], present[r, f] = vec, True
    return {f"{key}/x": torch.from_numpy(x), f"{key}/present": torch.from_numpy(present)}


def _text_dim(cfg) -> int:
    from core.text import encode_texts

    return encode_texts(["dimension probe"], model=text_model(cfg, log=lambda *_: None), cache_dir=False,
                        show_progress=False).shape[1]


def _pillow(key: str):
    """Pillow decodes image files; without it every image would silently count as unreadable."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(f"image feature {key!r} needs Pillow to read image files: pip install pillow "
                          f"(or give precomputed .npy vectors instead)") from None
    return Image


def _image_table(spec: dict, ents: Entities, cfg, source: Path, log) -> dict:
    ic = cfg.image_encoder_config
    root = image_root(ic, source)
    key, name, n = spec["name"], spec["fields"][0], len(ents) + 1
    present = np.zeros(n, bool)
    if spec["kind"] == "image_vector":
        x = np.zeros((n, spec["dim"]), np.float32)
    else:
        size = spec["size"]
        x = np.zeros((n, 3, size, size), np.uint8)
    Image = _pillow(key) if spec["kind"] == "image" else None
    missing, unreadable, total, first = 0, 0, 0, None
    for r, v in _values(ents, "image", name):
        if not v:
            continue
        total += 1
        path = resolve_path(v, root)
        if not path.is_file():
            missing += 1
            first = first or str(path)
            continue
        try:
            if spec["kind"] == "image_vector":
                vec = np.load(path, allow_pickle=False).astype(np.float32).reshape(-1)
                if vec.size != spec["dim"]:
                    raise ValueError(f"{vec.size} values, expected {spec['dim']}")
                x[r + 1] = vec
            else:
                with Image.open(path) as img:
                    thumb = img.convert("RGB").resize((size, size))
                x[r + 1] = np.asarray(thumb, np.uint8).transpose(2, 0, 1)
            present[r + 1] = True
        except Exception as exc:  # Pillow/numpy raise many types for corrupt files
            unreadable += 1
            first = first or f"{path} ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})"
    if missing or unreadable:
        log(f"warning: {ents.kind} {key}: {missing} of {total} files missing and {unreadable} unreadable "
            f"(first: {first}); they use the learned missing-image embedding")
    return {f"{key}/x": torch.from_numpy(x), f"{key}/present": torch.from_numpy(present)}

"""Embedding caches: float16 ``numpy.memmap`` files with a JSON index.

    <dir>/<name>.json                   the index (written last)
    <dir>/<name>-<inputs>-<model>.f16   row-major float16 [rows, dim], L2-normalized rows

The index holds ``ids`` (users or items), ``offsets`` (row range of ids[i] is
offsets[i]:offsets[i+1]), ``row_ids`` (item of each interaction row / persona id of each persona
row), ``shape``, ``dtype``, the ``model`` fingerprint (``core.text.model_id``: a hash of every
model file) and an ``inputs`` fingerprint (hash of ids and texts). A cache is reused when both
fingerprints match and rebuilt otherwise. The data file's name carries both fingerprints and is
written under a temporary name first, so an interrupted build leaves the old index pointing at the
old, complete file.

With several devices the rows are split into contiguous shards, one process per device, each
writing its rows into the same memmap.
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from core.errors import DataError
from core.store import atomic_path, atomic_write_json, check_name
from core.text import model_id, resolve_model_path

CACHE_FORMAT = 1
DTYPE = np.float16


@dataclass
class Cache:
    index_path: Path
    vectors: np.ndarray  # memmap [rows, dim] float16 (read-only)
    ids: list[str]
    offsets: np.ndarray  # [len(ids) + 1]
    row_ids: list[str]
    meta: dict
    position: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.position = {k: i for i, k in enumerate(self.ids)}

    def rows(self, key: str) -> np.ndarray | None:
        """The rows of one id (a view into the memmap), or None for an id not in the cache."""
        i = self.position.get(key)
        return None if i is None else self.vectors[self.offsets[i]:self.offsets[i + 1]]

    def __contains__(self, key: str) -> bool:
        return key in self.position


def inputs_fingerprint(groups: Sequence[tuple[str, Sequence[tuple[str, str]]]], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for key, rows in groups:
        h.update(b"\x1e" + key.encode())
        for rid, text in rows:
            h.update(b"\x1f" + rid.encode() + b"\x1f" + text.encode())
    return h.hexdigest()[:16]


def _read_index(index_path: Path) -> dict | None:
    try:
        meta = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def open_cache(index_path: str | Path) -> Cache:
    """Map a cache read-only; a missing or inconsistent cache is an error saying how to make it."""
    index_path = Path(index_path)
    hint = "run `python -m persona_training.build_cache` first"
    if not index_path.is_file():
        raise DataError(f"{index_path}: cache index not found; {hint}")
    meta = _read_index(index_path)
    if meta is None:
        raise DataError(f"{index_path}: not a cache index of this pipeline; {hint}")
    try:
        data = index_path.parent / meta["data"]
        rows, dim = meta["shape"]
        ok = len(meta["offsets"]) == len(meta["ids"]) + 1 and meta["offsets"][-1] == rows and len(meta["row_ids"]) == rows
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{index_path}: incomplete cache index; {hint}") from None
    if not ok:
        raise DataError(f"{index_path}: offsets/row_ids do not match shape {meta['shape']}; {hint}")
    if not data.is_file() or data.stat().st_size != rows * dim * np.dtype(DTYPE).itemsize:
        raise DataError(f"{data}: cache data missing or of the wrong size for {meta['shape']}; {hint}")
    vectors = np.memmap(data, dtype=DTYPE, mode="r", shape=(rows, dim))
    return Cache(index_path, vectors, list(meta["ids"]), np.asarray(meta["offsets"], dtype=np.int64),
                 list(meta["row_ids"]), meta)


def cache_status(index_path: str | Path, inputs: str, model: str) -> str:
    """``"fresh"``, ``"missing"`` or why the cache is stale."""
    meta = _read_index(Path(index_path))
    if meta is None:
        return "missing"
    if meta.get("model") != model:
        return f"built with model {meta.get('model')}, now {model}"
    if meta.get("inputs") != inputs:
        return "inputs changed"
    try:
        open_cache(index_path)
    except DataError:
        return "data file missing or damaged"
    return "fresh"


CHUNK = 1 << 16  # rows encoded between writes: bounds the float32 buffer, whatever the cache size


def _encode_rows(model, texts: Sequence[str], out: np.ndarray, batch_size: int, amp: bool, desc: str, progress: bool) -> None:
    """Embed ``texts`` into ``out`` (same length), each distinct text of a chunk once (histories
    repeat texts: the same item summary, title and rating)."""
    from persona_training.encoder import embed_texts

    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        pos: dict[str, int] = {}
        inverse = np.array([pos.setdefault(t, len(pos)) for t in chunk], dtype=np.int64)
        emb = embed_texts(model, list(pos), batch_size, amp, show_progress=progress, desc=desc)
        out[start:start + len(chunk)] = emb[inverse].astype(DTYPE)


def _encode_shard(model_path: str, device: str, texts: list[str], data_path: str, start: int, shape: tuple,
                  batch_size: int, amp: bool) -> int:
    """Encode ``texts`` into rows ``start:`` of the memmap at ``data_path`` (one process per device)."""
    from persona_training.encoder import load_encoder

    model = load_encoder(model_path, device)
    mm = np.memmap(data_path, dtype=DTYPE, mode="r+", shape=shape)
    _encode_rows(model, texts, mm[start:start + len(texts)], batch_size, amp, f"encoding on {device}", start == 0)
    mm.flush()
    del mm
    return len(texts)


def build_cache(index_path: str | Path, groups: Sequence[tuple[str, Sequence[tuple[str, str]]]], model: str | Path | None,
                *, devices: Sequence[str] = ("cpu",), batch_size: int = 64, amp: bool = True, settings: dict | None = None,
                force: bool = False, log: Callable[[str], None] = print) -> tuple[Cache, bool]:
    """Encode ``groups`` = ``[(id, [(row_id, text), ...]), ...]`` with ``model`` unless an up-to-date
    cache exists. Returns ``(cache, built)``. ``model``: a model folder, or None/"default" for MiniLM."""
    index_path = Path(index_path)
    stem = check_name(index_path.stem, "cache name")
    model_path = resolve_model_path(model)
    settings = dict(settings or {})
    inputs = inputs_fingerprint(groups, settings)
    mid = model_id(model_path)
    status = cache_status(index_path, inputs, mid)
    if status == "fresh" and not force:
        log(f"{index_path.name}: up to date ({mid}), reused")
        return open_cache(index_path), False
    texts = [t for _k, rows in groups for _r, t in rows]
    if not texts:
        raise DataError(f"{index_path.name}: nothing to cache (no texts); check the data files")
    log(f"{index_path.name}: {'rebuilding (' + status + ')' if status != 'missing' else 'building'}: "
        f"{len(texts)} texts with {mid} on {', '.join(devices)}")
    t0 = time.perf_counter()
    from persona_training.encoder import embedding_dim, load_encoder

    first = load_encoder(model_path, devices[0])
    dim = embedding_dim(first)
    shape = (len(texts), dim)
    data_name = f"{stem}-{inputs[:8]}-{mid.rsplit('-', 1)[-1][:8]}.f16"
    with atomic_path(index_path.parent / data_name) as tmp:
        mm = np.memmap(tmp, dtype=DTYPE, mode="w+", shape=shape)
        if len(devices) == 1:
            _encode_rows(first, texts, mm, batch_size, amp, stem, True)
            mm.flush()
            del mm
        else:
            mm.flush()
            del mm, first
            bounds = np.linspace(0, len(texts), len(devices) + 1).astype(int)
            # spawn, not fork: CUDA cannot be used in a forked child
            ctx = torch.multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(len(devices), mp_context=ctx) as pool:
                jobs = [pool.submit(_encode_shard, str(model_path), dev, texts[a:b], str(tmp), int(a), shape, batch_size, amp)
                        for dev, a, b in zip(devices, bounds[:-1], bounds[1:]) if b > a]
                done = sum(j.result() for j in jobs)
            assert done == len(texts)
    offsets = np.cumsum([0] + [len(rows) for _k, rows in groups]).tolist()
    meta = {"format": CACHE_FORMAT, "kind": stem, "dtype": "float16", "shape": list(shape), "data": data_name,
            "model": mid, "model_path": str(model_path), "inputs": inputs, "settings": settings,
            "ids": [k for k, _rows in groups], "offsets": offsets, "row_ids": [r for _k, rows in groups for r, _t in rows],
            "seconds": round(time.perf_counter() - t0, 3), "devices": list(devices)}
    atomic_write_json(index_path, meta, indent=None)
    for old in index_path.parent.glob(f"{stem}-*.f16"):  # superseded data files
        if old.name != data_name:
            old.unlink(missing_ok=True)
    log(f"{index_path.name}: {shape[0]} x {shape[1]} float16 in {meta['seconds']:.1f}s")
    return open_cache(index_path), True

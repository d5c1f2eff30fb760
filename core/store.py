"""The on-disk tree every pipeline reads and writes, and safe ways to write into it.

Layout (root = ``state_dict/`` beside the repo, moved by ``RECSYS_HOME`` or a config key)::

    <root>/<pipeline>/<dataset>/<run>/      checkpoints, config.yaml, metrics.jsonl
    <root>/embeddings/<pipeline>/<dataset>/ <name>.npy + <name>.ids.json

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a crash never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from core.errors import CheckpointError, DataError, UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_FORMAT = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def state_root(home: str | os.PathLike | None = None) -> Path:
    """Root of the output tree: explicit ``home`` > ``$RECSYS_HOME`` > ``<repo>/state_dict``."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get("RECSYS_HOME")
    return Path(env).expanduser() if env else REPO_ROOT / "state_dict"


def dataset_folder(dataset: str, data_root: str = "") -> Path:
    """A prepared dataset's folder: a path as given, else a name under ``data_root`` (default <repo>/data)."""
    if "/" in dataset or dataset.startswith("."):
        return Path(dataset)
    root = Path(data_root) if data_root else REPO_ROOT / "data"
    return root / check_name(dataset, "dataset")


def check_name(name: str, what: str = "name") -> str:
    """Refuse path components that could escape the tree (``..``, slashes, empty)."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise UserError(
            f"invalid {what} {name!r}: use letters, digits and _ . = + - only "
            "(no '/', no '..', not starting with '.')"
        )
    return name


def run_dir(pipeline: str, dataset: str, run: str, home: str | None = None) -> Path:
    """``<root>/<pipeline>/<dataset>/<run>/`` with every component validated."""
    return state_root(home) / check_name(pipeline, "pipeline") / check_name(dataset, "dataset") / check_name(run, "run name")


def embeddings_dir(pipeline: str, dataset: str, home: str | None = None) -> Path:
    return state_root(home) / "embeddings" / check_name(pipeline, "pipeline") / check_name(dataset, "dataset")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # fsync so that a power cut after the rename cannot expose an empty file
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line; a single ``write`` of a short line is atomic on POSIX appends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Short content hash of arrays, stored in checkpoints to catch a model/data mismatch."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    model_state: dict,
    model_args: dict,
    config: dict,
    data_fingerprint: str | None = None,
    **extra: Any,
) -> None:
    """Write a self-describing checkpoint atomically.

    ``kind`` names the model class (e.g. ``"sasrec"``); ``model_args`` are the constructor
    keyword arguments so the model can be rebuilt from the file alone; ``config`` is the
    resolved run config as plain data. ``extra`` holds optimizer/scheduler/RNG states etc.
    Everything must be tensors or plain containers so ``weights_only=True`` can load it.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "model_state": model_state,
        "model_args": model_args,
        "config": config,
        "data_fingerprint": data_fingerprint,
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str | tuple[str, ...] | None = None,
    data_fingerprint: str | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load with ``weights_only=True`` and check it is the expected model (and data)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first or pass the right --model-path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model_state" not in ckpt:
        raise CheckpointError(f"{path}: not a recsys-pipelines checkpoint (missing format/model_state)")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and ckpt.get("kind") not in kinds:
        raise CheckpointError(
            f"{path}: checkpoint holds a {ckpt.get('kind')!r} model, expected {' or '.join(kinds)}; "
            "pass a checkpoint of the right model"
        )
    if data_fingerprint and ckpt.get("data_fingerprint") and ckpt["data_fingerprint"] != data_fingerprint:
        raise CheckpointError(
            f"{path}: checkpoint was trained on different data (fingerprint {ckpt['data_fingerprint']} "
            f"!= {data_fingerprint}); use the dataset it was trained on"
        )
    return ckpt


# --------------------------------------------------------------------------- embeddings
def save_embeddings(directory: str | os.PathLike, name: str, vectors: np.ndarray, ids: list) -> Path:
    """Write ``<name>.npy`` (float32, one row per id) and ``<name>.ids.json`` atomically."""
    check_name(name, "embedding name")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"embeddings shape {vectors.shape} does not match {len(ids)} ids")
    directory = Path(directory)
    atomic_save_npy(directory / f"{name}.npy", vectors)
    atomic_write_json(directory / f"{name}.ids.json", list(ids), indent=None)
    return directory / f"{name}.npy"


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, list]:
    """Read ``X.npy`` and its ``X.ids.json``; refuses pickled object arrays."""
    path = Path(path)
    ids_path = path.with_suffix(".ids.json")
    for p in (path, ids_path):
        if not p.is_file():
            raise DataError(f"{p}: embedding file not found")
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a plain .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable .npy array ({exc or type(exc).__name__})") from None
    try:
        ids = json.loads(ids_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{ids_path}: not a JSON list of ids ({exc})") from None
    if not isinstance(ids, list):
        raise DataError(f"{ids_path}: expected a JSON list of ids, got {type(ids).__name__}")
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise DataError(f"{path}: {vectors.shape} rows do not match {len(ids)} ids in {ids_path.name}")
    return vectors, ids

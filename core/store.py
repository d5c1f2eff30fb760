"""The on-disk tree every pipeline reads and writes, and safe ways to write into it.

Layout (root = ``state_dict/`` beside the repo, moved by ``RECSYS_HOME`` or a config key)::

    <root>/<pipeline>/<dataset>/<run>/      checkpoints, config.yaml, metrics.jsonl
    <root>/embeddings/<pipeline>/<dataset>/ <name>.npy + <name>.ids.json

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a crash never leaves a half-written file under the final name.

A training run owns its folder (``claim_run_dir``): a lock file names the process that holds
it, and a folder whose ``config.yaml`` belongs to an earlier run is reused only on request.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import secrets
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from core.errors import CheckpointError, DataError, UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_FORMAT = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def state_root(home: str | os.PathLike | None = None) -> Path:
    """Root of the output tree: explicit ``home`` > ``$RECSYS_HOME`` > ``<repo>/state_dict``."""
    if home:
        return _check_root(Path(home).expanduser(), f"home={home}")
    env = os.environ.get("RECSYS_HOME")
    return _check_root(Path(env).expanduser(), f"RECSYS_HOME={env}") if env else REPO_ROOT / "state_dict"


def _check_root(root: Path, what: str) -> Path:
    """The root may not exist yet (it is created on first write), but where it or its nearest
    existing parent is a file every write below it would fail with a raw OS error."""
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == root else f"lies under {p}, which is a file"
                raise UserError(f"{what}: the output tree's root {where}, not a folder; point it at a folder "
                                "(created if missing) or unset it for <repo>/state_dict")
            break
    return root


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
    tmp_path = _new_temp(path.parent, f".{path.name}.", ".tmp")
    try:
        yield tmp_path
        # fsync so that a power cut after the rename cannot expose an empty file
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _new_temp(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty file with a fresh name in ``folder``. Unlike ``tempfile.mkstemp`` (always
    0600) the mode is 0666 less the umask, so outputs are as readable as any file the user makes."""
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary file name")


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
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive; torch's own error for anything else is "(101)"
        raise CheckpointError(f"{path}: not a checkpoint written by this project (not a PyTorch zip archive"
                              f"{'; the file is empty' if not head else ''}); pass a best.pt / last.pt of a run folder")
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



def aligned_vectors(vectors: np.ndarray, ids: list, wanted_ids: list, mode: str = "strict", source: str | os.PathLike = "",
                    what: str = "source", exact: bool = True, hint: str = "") -> np.ndarray:
    """Rows of ``vectors`` (one per id in ``ids``, as ``load_embeddings`` returns them) in the
    order of ``wanted_ids``; ``source`` (the file) and ``what`` name them in errors, ``hint``
    is the command that exports them. No padding row is added: row i is ``wanted_ids[i]``.

    - ``strict``: every wanted id must have a row (and with ``exact`` the file holds exactly as
      many users as are wanted); the rows keep the file's dtype and must be finite.
    - ``fill``: a wanted id without a row gets a zero row (float32); the whole file must be
      finite and at least one wanted id must be in it.
    """
    if mode not in ("strict", "fill"):
        raise ValueError(f"aligned_vectors: mode must be 'strict' or 'fill', got {mode!r}")
    row = {str(u): i for i, u in enumerate(ids)}
    if mode == "fill":
        if not np.isfinite(vectors).all():
            raise DataError(f"{source}: {what} vectors contain NaN or infinite values")
        out = np.zeros((len(wanted_ids), vectors.shape[1]), dtype=np.float32)
        have = np.array([str(u) in row for u in wanted_ids])
        if not have.any():
            raise DataError(f"{source}: none of its {len(ids)} user ids is a user of this dataset; export the vectors "
                            f"for this dataset ({hint})")
        out[have] = vectors[[row[str(u)] for u, h in zip(wanted_ids, have) if h]]
        return out
    if exact and len(ids) != len(wanted_ids):
        raise DataError(f"{source}: {what} vectors for {len(ids)} users but the data has {len(wanted_ids)}; export them "
                        f"for this dataset and target ({hint})")
    missing = [u for u in wanted_ids if str(u) not in row]
    if missing:
        raise DataError(f"{source}: no {what} vector for user {missing[0]!r} ({len(missing)} missing); export them for "
                        "this dataset")
    out = vectors[[row[str(u)] for u in wanted_ids]]
    if not np.isfinite(out).all():
        raise DataError(f"{source}: {what} vectors contain NaN or infinite values")
    return out

# --------------------------------------------------------------------------- run folders
LOCK_NAME = "run.lock"
# keys that never make two runs different: how and where it runs, and the switches of this section
CLAIM_IGNORED = ("run_name", "home", "device", "overwrite", "eval_only", "training.resume", "training.threads")
# keys a resumed run may change: it continues the same training for longer (or shorter)
RESUME_MAY_CHANGE = ("training.epochs", "training.time_budget_s", "training.patience")


def _proc_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux; "" elsewhere): a recycled pid has another one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]  # field 22, counted after "(comm)"
    except (OSError, ValueError, IndexError):
        return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OSError, OverflowError):
        return False
    return True


def _read_lock(path: Path) -> dict | None:
    """The holder record, or None when the file is gone; {} when it cannot be parsed."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder_text(info: dict) -> str:
    if not info:
        return "holder unknown: the lock file is unreadable"
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
            f"{str(info.get('command', ''))[:160]}")


def _is_stale(info: dict) -> bool:
    """True only when the holder is surely gone: a process of this host (this boot) that no
    longer runs. A holder on another host cannot be checked from here and counts as alive."""
    if not info or info.get("host") != socket.gethostname():
        return False
    if info.get("boot_id") and info.get("boot_id") != _boot_id():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    started = info.get("proc_start")
    return bool(started) and _proc_start(pid) not in ("", started)  # the pid now belongs to another process


def _flatten(obj: Any, prefix: str = "") -> dict:
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every dotted key whose value differs, leaving out ``CLAIM_IGNORED``
    and ``ignore`` (keys or whole sections); a key only one side has counts as ``<absent>``."""
    import yaml

    # the same normalisation as the config.yaml on disk (tuples -> lists, ...)
    a = _flatten(yaml.safe_load(yaml.safe_dump(old)) or {})
    b = _flatten(yaml.safe_load(yaml.safe_dump(new)) or {})
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key.rsplit(".", 1)[-1] in ("overwrite", "resume") or any(
                key == p or key.startswith(p + ".") for p in (*CLAIM_IGNORED, *ignore)):
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb:
            out.append((key, va, vb))
    return out


def _show(diffs: list[tuple[str, Any, Any]], most: int = 3) -> str:
    shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diffs[:most])
    return shown + (f" and {len(diffs) - most} more" if len(diffs) > most else "")


class RunClaim:
    """A run folder held by this process; ``release()`` (or leaving the ``with`` block) frees it."""

    def __init__(self, folder: Path, lock: Path | None, token: str) -> None:
        self.folder, self.lock, self.token = folder, lock, token

    def release(self) -> None:
        if self.lock is None:
            return
        info = _read_lock(self.lock)
        if info and info.get("token") == self.token:  # never remove a lock that another run took over
            self.lock.unlink(missing_ok=True)
        self.lock = None

    def __enter__(self) -> "RunClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _take_lock(folder: Path, log: Callable[[str], None]) -> RunClaim:
    lock = folder / LOCK_NAME
    token = secrets.token_hex(8)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
              "proc_start": _proc_start(os.getpid()),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "token": token}
    tmp = _new_temp(folder, f".{LOCK_NAME}.", ".new")  # not *.tmp: the fit loop sweeps those
    try:
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        for _ in range(5):
            try:
                os.link(tmp, lock)  # atomic create-if-absent, with the record already complete
                return RunClaim(folder, lock, token)
            except FileExistsError:
                pass
            info = _read_lock(lock)
            if info is None:  # released between our two calls: try again
                continue
            if not _is_stale(info):
                raise UserError(f"{folder} is in use by another run ({_holder_text(info)}); wait for it to finish or "
                                f"give this run its own folder with --override run_name=<new>; if that run is gone, "
                                f"delete {lock}")
            # take over a dead holder's lock; the side lock makes sure only one process does
            side = folder / f"{LOCK_NAME}.takeover"
            try:
                os.link(tmp, side)
            except FileExistsError:
                side_info = _read_lock(side)
                if side_info is not None and _is_stale(side_info):
                    side.unlink(missing_ok=True)
                continue
            try:
                if _read_lock(lock) == info:  # still the dead holder's record
                    log(f"warning: {folder}: taking over the lock of a run that ended without releasing it "
                        f"({_holder_text(info)})")
                    os.replace(side, lock)
                    return RunClaim(folder, lock, token)
            finally:
                side.unlink(missing_ok=True)
        raise UserError(f"{folder}: could not take its lock {lock} (other processes keep changing it); try again")
    finally:
        tmp.unlink(missing_ok=True)


def _check_earlier_run(folder: Path, config: dict, resume: bool, overwrite: bool, resumable: bool,
                       ignore: tuple[str, ...], log: Callable[[str], None]) -> None:
    saved_path = folder / "config.yaml"
    if not saved_path.is_file():
        return  # a new folder, or files of no run of this project: nothing to protect
    import yaml

    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        saved = {"<unreadable config.yaml>": True}
    diffs = config_differences(saved, config, ignore)
    state = "finished" if (folder / "results.json").is_file() else "unfinished"
    if resume:  # an explicit resume wins over overwrite (which a config may set as its default, e.g. a demo's)
        blocking = [d for d in diffs if d[0] not in RESUME_MAY_CHANGE]
        if blocking:
            raise UserError(f"{folder}: training.resume=true continues the run there, but this config differs from "
                            f"its config.yaml ({_show(blocking)}); resume with that run's settings, or start a new run "
                            "with --override run_name=<new> (overwrite=true without resume replaces the earlier run)")
        return
    if overwrite:
        # replace the earlier run: its files go now, so that none of them (an epoch snapshot, a
        # checkpoint of another maxlen) is later mistaken for this run's. Sub-folders are other runs
        for p in folder.iterdir():
            if p.is_file() and p.name != LOCK_NAME:
                p.unlink(missing_ok=True)
        log(f"overwrite=true: removed the files of the earlier {state} run in {folder}")
        return
    if diffs:
        raise UserError(f"{folder} holds another run ({state}; its config.yaml differs: {_show(diffs)}); keep both "
                        "with --override run_name=<new>, or replace it with --override overwrite=true")
    again = "continue it with --override training.resume=true, " if resumable else ""
    raise UserError(f"{folder} already holds a {state} run of this same config; {again}start it again with "
                    "--override overwrite=true, or keep both with --override run_name=<new>")


def claim_run_dir(folder: str | os.PathLike, config: dict | None, *, resume: bool = False, overwrite: bool = False,
                  resumable: bool = True, ignore: tuple[str, ...] = (), log: Callable[[str], None] = print
                  ) -> RunClaim:
    """Make ``folder`` this run's own: take its lock, then accept an earlier run's folder only on request.

    - The lock ``<folder>/run.lock`` is created atomically and names the holder (pid, host, start
      time, command); a second run stops with one error naming it. A lock whose process is gone
      (same host) is taken over with a warning. Released by ``release()`` / the ``with`` block.
    - ``config`` (the resolved config as plain data; None = do not compare) is checked against
      the folder's ``config.yaml``: the same config needs ``resume``, a different one
      ``overwrite`` (which removes the earlier run's files; sub-folders are kept). ``resume``
      wins over ``overwrite``: a resumed run never deletes what it continues. ``resumable``
      False: the run has no ``last.pt``, so the error does not suggest resuming. ``ignore``: keys
      or sections that do not change what this run writes (e.g. another stage's settings).
    - Under torchrun rank 0 decides for all ranks (the others hold nothing, and raise the same
      error when rank 0 refuses).
    """
    from core.dist import dist_info

    folder = Path(folder)
    rank, world, _ = dist_info()
    error, claim = "", None
    if rank == 0:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            claim = _take_lock(folder, log)
            try:
                if config is not None:
                    _check_earlier_run(folder, config, resume, overwrite, resumable, ignore, log)
            except BaseException:
                claim.release()
                raise
        except UserError as exc:
            error = str(exc)
            if world == 1:
                raise
        except OSError as exc:  # e.g. the run folder's path is a file, or not writable
            error = f"{folder}: cannot be used as a run folder ({exc.strerror or exc}); choose another run_name or home"
            if world == 1:
                raise UserError(error) from None
    if world > 1:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, 0)
        if box[0]:
            raise UserError(box[0])
    return claim or RunClaim(folder, None, "")

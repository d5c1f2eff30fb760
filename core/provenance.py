"""The run record every ``results.json`` carries under ``"run"``: enough to trace a result to
the code, data, software and machine that made it, and to tell why two results differ.

``run_record(cfg, device=..., threads=..., started=..., data_paths=[...])`` returns plain JSON
data: the resolved config and seed, the git commit and whether the work tree had changes, the
Python / torch / numpy versions, host and platform, CPU threads, device, start and end times
(UTC, ISO 8601) and a fingerprint of the data files. Nothing in it can fail a run: no git, an
unreadable file or a missing path is recorded as such.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

GIT_TIMEOUT_S = 5.0
HASH_FILE_LIMIT = 64 << 20  # files up to this size are hashed whole (~0.1 s each) ...
HASH_TOTAL_LIMIT = 256 << 20  # ... until this many bytes are hashed; the rest go by size + mtime
REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                             check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or a hung one
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the code runs from,
    once per process (the code a process runs does not change under it)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    return {"commit": commit.strip() if commit else None,
            "dirty": None if status is None else bool(status.strip())}


def _files(paths: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += [(f"{p.name}/{f.relative_to(p).as_posix()}", f) for f in sorted(p.rglob("*"))
                    if f.is_file() and not f.name.startswith(".")]
        else:
            out.append((p.name, p))
    return out


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> dict:
    """sha256 over the data files (a folder: every file in it): content for files up to
    ``HASH_FILE_LIMIT`` while the total stays under ``HASH_TOTAL_LIMIT``, else size and mtime
    (``"quick": true`` says so), so it stays fast on large prepared datasets."""
    digest, n, size, quick, budget, missing = hashlib.sha256(), 0, 0, False, HASH_TOTAL_LIMIT, []
    for name, path in _files(paths):
        try:
            st = path.stat()
        except OSError:
            missing.append(name)
            continue
        n, size = n + 1, size + st.st_size
        digest.update(f"{name}\0{st.st_size}\0".encode())
        if st.st_size <= HASH_FILE_LIMIT and st.st_size <= budget:
            budget -= st.st_size
            try:
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                continue
            except OSError:
                pass
        quick = True
        digest.update(f"mtime\0{st.st_mtime_ns}".encode())
    out = {"sha256": digest.hexdigest(), "files": n, "bytes": size, "quick": quick}
    if missing:
        out["missing"] = missing
    return out


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def _version(module: str) -> str | None:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module)
        except ImportError:
            return None
    return getattr(mod, "__version__", None)


def cpuinfo() -> str | None:
    """The text of /proc/cpuinfo, or None where there is none (not Linux): the one reader of CPU facts."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None


def cpu_has_native_bf16() -> bool | None:
    """True/False where the CPU's flags can be read, None elsewhere. Without AVX512-BF16 or AMX, bf16
    autocast is emulated: a Beauty SASRec step ran ~10x slower than fp32 on an AVX2 EPYC."""
    text = cpuinfo()
    return None if text is None else any(f in text.split() for f in ("avx512_bf16", "amx_bf16"))


def cpu_description() -> str:
    """The CPU as far as timings depend on it: its model name (Linux) and the widest vector ISA torch
    dispatches to. Two machines of the same kind here differed 1.7x per SASRec epoch (AVX512 + bf16
    against AVX2), so time figures carry this."""
    name = platform.processor() or platform.machine()
    for line in (cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    try:
        import torch

        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001  (an old torch without the call: the name alone)
        return name
    return f"{name}, {isa}"


def run_record(cfg, *, device=None, threads: int | None = None, started: float | None = None,
               data_paths: Iterable[str | os.PathLike] = (), data_fingerprint: str | None = None,
               ended: float | None = None) -> dict:
    """The ``"run"`` entry of a ``results.json``.

    ``cfg``: the config dataclass (or its dict); ``device``: what the run computed on;
    ``threads``: torch's CPU threads; ``started``/``ended``: ``time.time()`` values (``ended``
    defaults to now); ``data_paths``: the data files or folders read; ``data_fingerprint``: the
    loaded data's own fingerprint where it has one (the value checkpoints carry)."""
    from core.config import to_dict

    config = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg or {})
    ended = time.time() if ended is None else ended
    record = {
        "config": config,
        "seed": config.get("seed"),
        "git": git_state(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "threads": threads,
        "device": None if device is None else str(device),
        "started": _iso(started) if started else None,
        "ended": _iso(ended),
        "seconds": round(ended - started, 3) if started else None,
        "argv": list(sys.argv),
        "data": fingerprint_files([p for p in data_paths if p is not None]),
    }
    if data_fingerprint is not None:
        record["data"]["loaded_fingerprint"] = data_fingerprint
    return record

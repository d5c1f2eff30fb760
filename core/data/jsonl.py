"""Strict JSON Lines reading: a malformed line is an error naming the file and line, never skipped."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from core.errors import DataError


def parse_object(line: str, path: str | Path, lineno: int) -> dict:
    """One JSONL line as a dict, else a DataError naming file and line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    seen = False
    with open(path, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of line 1
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = parse_object(line, path, lineno)
            seen = True
            yield lineno, obj
    if not seen:
        raise DataError(f"{path}: empty file; expected one JSON object per line")


def require(obj: dict, key: str, types: type | tuple, path: str | Path, lineno: int, where: str = ""):
    """``obj[key]`` checked for presence and type, else a DataError naming file, line and key.

    ``where`` names a nested record in the message (e.g. ``"reviews[3]."`` gives ``'reviews[3].rating'``).
    """
    if key not in obj:
        raise DataError(f"{path}:{lineno}: missing key {where + key!r}")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DataError(f"{path}:{lineno}: key {where + key!r} should be {want}, got {type(value).__name__}")
    return value

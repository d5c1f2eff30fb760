"""One line per user, ``user item item ...`` oldest first (S3-Rec / ICLRec ``data/<Name>.txt``).

Ids must be integers. Users keep their line's order; a user id on two lines is an error.
A line holding only a user id (no items) gives an empty sequence; that user is dropped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from core.data.prepare.common import Prepared, build_sequences, iter_lines, read_text, require_file, safe_name, to_int
from core.errors import DataError, UserError
from core.store import check_name

# file stems of the standard Amazon sets -> short dataset names
STEM_NAMES = {"beauty": "beauty", "sports_and_outdoors": "sports", "toys_and_games": "toys"}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, help="text file, one line per user: user item item ...")
    p.add_argument("--name", default=None,
                   help="dataset name (default: file stem lowercased; Beauty/Sports_and_Outdoors/Toys_and_Games "
                        "-> beauty/sports/toys)")


def run(args: argparse.Namespace) -> list[Prepared]:
    return [load(args.path, name=args.name, out=args.out)]


def default_name(path: Path) -> str:
    stem = path.stem.lower()
    name = STEM_NAMES.get(stem, stem)
    try:
        return check_name(name, "dataset name")
    except UserError:
        raise DataError(f"{path}: cannot derive a dataset name from the file name; pass --name {safe_name(name)}") from None


def load(path: str | Path, name: str | None = None, out: str | Path | None = None) -> Prepared:
    path = require_file(path, "sequence file")
    name = check_name(name, "dataset name") if name else default_name(path)
    text = read_text(path, "latin-1", "sequence file")
    seen: dict[int, int] = {}
    lengths: list[int] = []
    user_of_line: list[int] = []
    items: list[int] = []
    empty = 0
    for lineno, line in iter_lines(text):
        parts = line.split()
        user = to_int(parts[0], path, lineno, "user id")
        if user in seen:
            raise DataError(f"{path}:{lineno}: user {user} already has a line ({seen[user]}); one line per user")
        seen[user] = lineno
        try:
            seq = [int(t) for t in parts[1:]]
        except ValueError:
            seq = [to_int(t, path, lineno, "item id") for t in parts[1:]]
        if not seq:
            empty += 1
            continue
        user_of_line.append(user)
        lengths.append(len(seq))
        items.extend(seq)
    if not items:
        raise DataError(f"{path}: no items on any line; expected `user item item ...` per line")
    users = np.repeat(np.asarray(user_of_line, dtype=np.int64), lengths)
    data, _ = build_sequences(users, items, None, path)
    notes = ["one line per user, items oldest first; no timestamps"]
    if empty:
        notes.append(f"dropped {empty} users whose line has no items")
    return Prepared(name=name, data=data, preparer="seq-lines", source=path, out=Path(out) if out else None,
                    notes=notes, source_files=[path])

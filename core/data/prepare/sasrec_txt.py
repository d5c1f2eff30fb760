"""SASRec ``data/<name>.txt``: one ``user item`` pair per line; a user's order is file order."""
from __future__ import annotations

import argparse
from pathlib import Path

from core.data.prepare.common import Prepared, build_sequences, iter_lines, read_text, require_file, safe_name, to_int
from core.errors import DataError, UserError
from core.store import check_name


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, help="text file, one `user item` pair per line, time-ordered per user")
    p.add_argument("--name", default=None, help="dataset name (default: file stem lowercased)")


def run(args: argparse.Namespace) -> list[Prepared]:
    return [load(args.path, name=args.name, out=args.out)]


def load(path: str | Path, name: str | None = None, out: str | Path | None = None) -> Prepared:
    path = require_file(path, "interaction file")
    if name is None:
        try:
            name = check_name(path.stem.lower(), "dataset name")
        except UserError:
            raise DataError(f"{path}: cannot derive a dataset name from the file name; pass --name {safe_name(path.stem.lower())}") from None
    else:
        name = check_name(name, "dataset name")
    text = read_text(path, "latin-1", "interaction file")
    users: list[int] = []
    items: list[int] = []
    for lineno, line in iter_lines(text):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 2 fields (user item), found {len(parts)}")
        try:
            u, i = int(parts[0]), int(parts[1])
        except ValueError:
            u = to_int(parts[0], path, lineno, "user id")
            i = to_int(parts[1], path, lineno, "item id")
        users.append(u)
        items.append(i)
    data, _ = build_sequences(users, items, None, path)
    return Prepared(name=name, data=data, preparer="sasrec-txt", source=path, out=Path(out) if out else None,
                    notes=["one `user item` pair per line; order within a user is file order; no timestamps"],
                    source_files=[path])

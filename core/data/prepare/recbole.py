"""RecBole atomic ``.inter`` file: tab-separated, typed header ``name:type``.

Example header: ``user_id:token	item_id:token	rating:float	timestamp:float``. The user and
item columns are required; the timestamp column is optional (when present, a user's items
are sorted by it, ties in file order; otherwise file order is kept). Other columns are
ignored. Ids that are all canonical integers are stored as ints (sorted numerically),
otherwise as strings in order of first sight.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from core.data.prepare.common import Prepared, build_sequences, iter_lines, read_text, require_file, safe_name
from core.errors import DataError, UserError
from core.store import check_name

TYPES = ("token", "token_seq", "float", "float_seq")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, help="RecBole atomic .inter file")
    p.add_argument("--name", default=None, help="dataset name (default: file stem)")
    p.add_argument("--user-field", default="user_id", help="user column name (default user_id)")
    p.add_argument("--item-field", default="item_id", help="item column name (default item_id)")
    p.add_argument("--time-field", default="timestamp", help="timestamp column name, used when present (default timestamp)")


def run(args: argparse.Namespace) -> list[Prepared]:
    return [load(args.path, name=args.name, out=args.out, user_field=args.user_field,
                 item_field=args.item_field, time_field=args.time_field)]


def parse_header(line: str, path: Path, lineno: int) -> list[tuple[str, str]]:
    cols: list[tuple[str, str]] = []
    for f in line.split("\t"):
        name, sep, typ = f.strip().partition(":")
        if not sep or not name or typ not in TYPES:
            hint = "; fields must be separated by tabs" if "\t" not in line and " " in line.strip() else ""
            raise DataError(
                f"{path}:{lineno}: malformed header field {f!r}; expected tab-separated name:type "
                f"with type one of {', '.join(TYPES)} (e.g. user_id:token){hint}"
            )
        if any(name == c for c, _ in cols):
            raise DataError(f"{path}:{lineno}: header names column {name!r} twice")
        cols.append((name, typ))
    return cols


def _ids(tokens: list[str]) -> list:
    """Canonical integer tokens -> ints (so '7' and '07' never merge); otherwise keep strings."""
    try:
        ints = [int(t) for t in tokens]
    except ValueError:
        return tokens
    if all(str(i) == t for i, t in zip(ints, tokens)):
        return ints
    return tokens


def load(path: str | Path, name: str | None = None, out: str | Path | None = None,
         user_field: str = "user_id", item_field: str = "item_id", time_field: str = "timestamp") -> Prepared:
    path = require_file(path, "RecBole .inter file")
    try:
        name = check_name(name or path.stem, "dataset name")
    except UserError:
        if name:
            raise
        raise DataError(f"{path}: cannot derive a dataset name from the file name; pass --name {safe_name(path.stem)}") from None
    lines = iter_lines(read_text(path, "utf-8", "RecBole .inter file"))
    hline, header = next(lines)
    cols = parse_header(header, path, hline)
    names = [c for c, _ in cols]
    for need in (user_field, item_field):
        if need not in names:
            raise DataError(f"{path}:{hline}: header has no {need!r} column (columns: {', '.join(names)})")
    ui, ii = names.index(user_field), names.index(item_field)
    ti = names.index(time_field) if time_field in names else None
    n = len(cols)
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    for lineno, line in lines:
        parts = line.split("\t")
        if len(parts) != n:
            raise DataError(f"{path}:{lineno}: expected {n} tab-separated fields as in the header, found {len(parts)}")
        u, i = parts[ui].strip(), parts[ii].strip()
        if not u or not i:
            raise DataError(f"{path}:{lineno}: empty {user_field if not u else item_field}")
        users.append(u)
        items.append(i)
        if ti is not None:
            tok = parts[ti].strip()
            try:
                t = float(tok)
            except ValueError:
                t = math.nan
            if not math.isfinite(t):
                raise DataError(f"{path}:{lineno}: {time_field} {tok!r} is not a finite number")
            ts.append(t)
    if not users:
        raise DataError(f"{path}: header only, no interaction rows")
    timestamps = np.asarray(ts, dtype=np.float64) if ti is not None else None
    data, _ = build_sequences(_ids(users), _ids(items), timestamps, path)
    notes = [f"RecBole atomic file; users from {user_field!r}, items from {item_field!r}"]
    if ti is not None:
        notes.append(f"ordered by {time_field!r} (ties in file order); stored timestamps rounded down to integers")
    else:
        notes.append("no timestamp column: order within a user is file order")
    return Prepared(name=name, data=data, preparer="recbole", source=path, out=Path(out) if out else None,
                    notes=notes, source_files=[path])

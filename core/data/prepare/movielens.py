"""MovieLens 1M (``ratings.dat``, ``::``) and 100K (``u.data``, tab) -> implicit-feedback sequences.

Every rating counts as one interaction. A user's items are ordered by timestamp, ties in
the original file order. Optional iterative k-core filter (``--min-count``). Side
information is kept as ``item_side.json`` (title, year, genres) and ``user_side.json``
(demographics), keyed by raw id, for the users and items in the prepared dataset.

- ML-1M: ``movies.dat`` ``id::Title (Year)::Genre|Genre`` and ``users.dat``
  ``id::gender::age::occupation::zip`` (age and occupation are integer codes).
- ML-100K: ``u.item`` (24 ``|`` fields, 19 genre flags named by ``u.genre``) and ``u.user``
  ``id|age|gender|occupation|zip`` (age in years, occupation a word).

Side files are Latin-1. They are optional: when absent, no side file is written.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from core.data.prepare.common import (
    Prepared,
    build_sequences,
    fields,
    iter_lines,
    read_text,
    require_dir,
    to_int,
)
from core.errors import DataError
from core.store import check_name

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
ENCODING = "latin-1"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, help="folder with ratings.dat (ML-1M) or u.data (ML-100K)")
    p.add_argument("--min-count", type=int, default=0,
                   help="iterative k-core: keep users and items with at least N interactions (default 0: no filter)")
    p.add_argument("--name", default=None, help="dataset name (default ml-1m or ml-100k)")


def run(args: argparse.Namespace) -> list[Prepared]:
    return [load(args.path, min_count=args.min_count, name=args.name, out=args.out)]


def detect(path: str | Path) -> tuple[str, Path]:
    """``("ml-1m" | "ml-100k", folder)``; ``path`` may be the folder or its ratings file."""
    path = Path(path)
    if path.is_file() and path.name in ("ratings.dat", "u.data"):
        path = path.parent
    require_dir(path, "MovieLens folder")
    if (path / "ratings.dat").exists():
        return "ml-1m", path
    if (path / "u.data").exists():
        return "ml-100k", path
    raise DataError(
        f"{path}: no ratings.dat (MovieLens 1M) or u.data (MovieLens 100K) in this folder; "
        "pass the folder that holds the ratings file"
    )


def load(path: str | Path, min_count: int = 0, name: str | None = None, out: str | Path | None = None) -> Prepared:
    if min_count < 0:
        raise DataError(f"--min-count must be >= 0, got {min_count}")
    kind, folder = detect(path)
    name = check_name(name or kind, "dataset name")
    if kind == "ml-1m":
        ratings = folder / "ratings.dat"
        users, items, values, ts = _read_ratings(ratings, "::", "user::item::rating::timestamp")
    else:
        ratings = folder / "u.data"
        users, items, values, ts = _read_ratings(ratings, "\t", "tab-separated user item rating timestamp")
    data, dropped = build_sequences(users, items, ts, ratings, min_count=min_count, ratings=values)

    # side information (optional files; a malformed one is an error)
    sources = [ratings]
    notes = [
        f"{kind}: every rating is one implicit interaction; per-user order is by timestamp, "
        "ties kept in original file order",
    ]
    if min_count > 1:
        notes.append(f"iterative {min_count}-core on users and items dropped {dropped} of {len(users)} ratings")
    item_keep, user_keep = set(data.item_ids), set(data.user_ids)
    if kind == "ml-1m":
        item_file, user_file = folder / "movies.dat", folder / "users.dat"
        item_reader, user_reader = _read_movies_dat, _read_users_dat
    else:
        item_file, user_file = folder / "u.item", folder / "u.user"
        item_reader, user_reader = _read_u_item, _read_u_user
    item_side = user_side = None
    if item_file.exists():
        all_items = item_reader(item_file)
        item_side = {str(i): all_items[i] for i in data.item_ids if i in all_items}
        missing = len(item_keep) - len(item_side)
        sources.append(item_file)
        notes.append(f"item_side.json from {item_file.name}: title (year removed), year, genres"
                     + (f"; {missing} rated items have no entry" if missing else ""))
    else:
        notes.append(f"no {item_file.name}: no item side information")
    if user_file.exists():
        all_users = user_reader(user_file)
        user_side = {str(u): all_users[u] for u in data.user_ids if u in all_users}
        missing = len(user_keep) - len(user_side)
        sources.append(user_file)
        notes.append(f"user_side.json from {user_file.name}"
                     + (": age bucket and occupation are ML-1M integer codes" if kind == "ml-1m" else "")
                     + (f"; {missing} users have no entry" if missing else ""))
    else:
        notes.append(f"no {user_file.name}: no user side information")
    return Prepared(
        name=name, data=data, preparer="movielens", source=folder, out=Path(out) if out else None,
        notes=notes, source_files=sources, item_side=item_side, user_side=user_side,
        extra_meta={"variant": kind, "min_count": min_count, "implicit": True},
    )


# --------------------------------------------------------------------------- ratings
def _read_ratings(path: Path, sep: str, layout: str) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Users, items, star ratings and timestamps, row by row."""
    text = read_text(path, ENCODING, "ratings file")
    users: list[int] = []
    items: list[int] = []
    stars: list[float] = []
    ts: list[int] = []
    for lineno, line in iter_lines(text):
        parts = line.split(sep)
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 4 fields ({layout}), found {len(parts)}")
        try:
            u, i, r, t = int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])
        except ValueError:
            # find which field is bad; to_int raises a DataError naming the line
            u = to_int(parts[0], path, lineno, "user id")
            i = to_int(parts[1], path, lineno, "item id")
            t = to_int(parts[3], path, lineno, "timestamp")
            r = float(to_int(parts[2], path, lineno, "rating"))
        users.append(u)
        items.append(i)
        stars.append(r)
        ts.append(t)
    return users, items, np.asarray(stars, dtype=np.float32), np.asarray(ts, dtype=np.int64)


# --------------------------------------------------------------------------- side files
def _split_title(title: str) -> tuple[str, int | None]:
    m = _YEAR.match(title)
    return (m.group(1), int(m.group(2))) if m else (title.strip(), None)


def _read_movies_dat(path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for lineno, line in iter_lines(read_text(path, ENCODING, "movies file")):
        mid, title, genres = fields(line, "::", 3, path, lineno, "movie_id::Title (Year)::Genre|Genre")
        title, year = _split_title(title)
        out[to_int(mid, path, lineno, "movie id")] = {
            "title": title, "year": year, "genres": [g for g in genres.split("|") if g],
        }
    return out


def _read_users_dat(path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for lineno, line in iter_lines(read_text(path, ENCODING, "users file")):
        uid, gender, age, occ, zipcode = fields(line, "::", 5, path, lineno, "user_id::gender::age::occupation::zip")
        out[to_int(uid, path, lineno, "user id")] = {
            "gender": gender,
            "age": to_int(age, path, lineno, "age code"),
            "occupation": to_int(occ, path, lineno, "occupation code"),
            "zip": zipcode,
        }
    return out


def _read_u_genre(path: Path) -> list[str]:
    if not path.exists():
        return list(ML100K_GENRES)
    names: dict[int, str] = {}
    for lineno, line in iter_lines(read_text(path, ENCODING, "genre file")):
        gname, idx = fields(line, "|", 2, path, lineno, "name|index")
        names[to_int(idx, path, lineno, "genre index")] = gname
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: genre indexes are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def _read_u_item(path: Path) -> dict[int, dict]:
    genres = _read_u_genre(path.parent / "u.genre")
    n = 5 + len(genres)
    out: dict[int, dict] = {}
    for lineno, line in iter_lines(read_text(path, ENCODING, "item file")):
        parts = fields(line, "|", n, path, lineno, f"id|title|release date|video release date|URL|{len(genres)} genre flags")
        title, year = _split_title(parts[1])
        if year is None and parts[2][-4:].isdigit():
            year = int(parts[2][-4:])
        flags = parts[5:]
        for flag in flags:
            if flag not in ("0", "1"):
                raise DataError(f"{path}:{lineno}: genre flag {flag!r} is not 0 or 1")
        out[to_int(parts[0], path, lineno, "item id")] = {
            "title": title,
            "year": year,
            "genres": [g for g, f in zip(genres, flags) if f == "1"],
            "release_date": parts[2] or None,
        }
    return out


def _read_u_user(path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for lineno, line in iter_lines(read_text(path, ENCODING, "user file")):
        uid, age, gender, occ, zipcode = fields(line, "|", 5, path, lineno, "user_id|age|gender|occupation|zip")
        out[to_int(uid, path, lineno, "user id")] = {
            "gender": gender, "age": to_int(age, path, lineno, "age"), "occupation": occ, "zip": zipcode,
        }
    return out

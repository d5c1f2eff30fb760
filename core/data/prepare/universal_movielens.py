"""MovieLens 100K / 1M -> one universal-format JSON document (``<out>/data.json``) for ``universal``.

- users: ``categorical`` gender, occupation (ML-1M codes mapped to their names), zip3 (the
  first three characters of the zip code: full codes are nearly unique per user), and for
  ML-1M age_group (the age bucket code); ``continuous`` age (ML-100K years; ML-1M the bucket's
  lower bound);
- items: ``text`` title (the year removed), ``categorical`` genres as one multi-valued field
  (a list; the encoder averages the rows of a movie's genres), ``continuous`` year;
- interactions: every rating (or those >= ``--min_rating``) with its Unix ``timestamp`` and ``rating``.

Layouts as the ``movielens`` preparer reads them: ML-100K ``u.data`` + ``u.item`` + ``u.user``,
ML-1M ``ratings.dat`` + ``movies.dat`` + ``users.dat``. Side files are optional (records then
carry ids only); every user and item of a rating gets a record.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from core.data.prepare import movielens
from core.data.prepare.common import default_out
from core.errors import DataError
from core.store import atomic_write_json, check_name

ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", required=True, help="folder with u.data (ML-100K) or ratings.dat (ML-1M)")
    p.add_argument("--min_rating", "--min-rating", type=float, default=0.0,
                   help="keep ratings >= this as interactions (default 0: all)")
    p.add_argument("--name", default=None, help="dataset name (default universal-ml-100k or universal-ml-1m)")


@dataclass
class UniversalPrepared:
    """A parsed dataset in the universal format; ``write`` puts it in ``<out>/data.json``."""

    name: str
    document: dict
    out: Path

    def write(self) -> str:
        atomic_write_json(self.out / "data.json", self.document, indent=None)
        d = self.document
        return (f"prepared {self.name}: {len(d['user_data'])} users, {len(d['item_data'])} items, "
                f"{len(d['interactions'])} interactions -> {self.out / 'data.json'}")


def run(args: argparse.Namespace) -> list[UniversalPrepared]:
    return [load(args.path, args.min_rating, args.name, args.out)]


def load(path: str | Path, min_rating: float = 0.0, name: str | None = None, out: str | Path | None = None) -> UniversalPrepared:
    kind, folder = movielens.detect(path)
    name = check_name(name or f"universal-{kind}", "dataset name")
    if kind == "ml-1m":
        ratings = folder / "ratings.dat"
        users, items, stars, ts = movielens._read_ratings(ratings, "::", "user::item::rating::timestamp")
        item_file, user_file = folder / "movies.dat", folder / "users.dat"
        item_side = movielens._read_movies_dat(item_file) if item_file.exists() else {}
        user_side = movielens._read_users_dat(user_file) if user_file.exists() else {}
    else:
        ratings = folder / "u.data"
        users, items, stars, ts = movielens._read_ratings(ratings, "\t", "tab-separated user item rating timestamp")
        item_file, user_file = folder / "u.item", folder / "u.user"
        item_side = movielens._read_u_item(item_file) if item_file.exists() else {}
        user_side = movielens._read_u_user(user_file) if user_file.exists() else {}
    keep = [n for n, r in enumerate(stars.tolist()) if r >= min_rating]
    if not keep:
        raise DataError(f"{ratings}: no rating is >= --min_rating {min_rating}; lower it")
    interactions = [{"user_id": users[n], "item_id": items[n], "timestamp": int(ts[n]), "rating": float(stars[n])}
                    for n in keep]
    user_ids = sorted(set(user_side) | {r["user_id"] for r in interactions})
    item_ids = sorted(set(item_side) | {r["item_id"] for r in interactions})
    document = {
        "user_data": [_user(u, user_side.get(u), kind) for u in user_ids],
        "item_data": [_item(i, item_side.get(i)) for i in item_ids],
        "interactions": interactions,
    }
    return UniversalPrepared(name, document, Path(out) if out else default_out(name))


def _user(uid: int, side: dict | None, kind: str) -> dict:
    rec: dict = {"user_id": uid}
    if side is None:
        return rec
    cat = {"gender": side["gender"], "zip3": side["zip"][:3]}
    if kind == "ml-1m":
        occ = side["occupation"]
        cat["occupation"] = ML1M_OCCUPATIONS[occ] if 0 <= occ < len(ML1M_OCCUPATIONS) else str(occ)
        cat["age_group"] = str(side["age"])
    else:
        cat["occupation"] = side["occupation"]
    rec["categorical"] = cat
    rec["continuous"] = {"age": float(side["age"])}
    return rec


def _item(iid: int, side: dict | None) -> dict:
    rec: dict = {"item_id": iid}
    if side is None:
        return rec
    rec["text"] = {"title": side["title"]}
    rec["categorical"] = {"genres": list(side["genres"])}
    if side.get("year") is not None:
        rec["continuous"] = {"year": float(side["year"])}
    return rec

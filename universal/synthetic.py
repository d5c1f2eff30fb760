"""The generated default dataset in the universal format (no download, deterministic).

Users belong to one of ``n_groups`` occupations; each occupation prefers one item category.
A user's interactions are drawn from the preferred category with probability ``p_taste``,
otherwise from a popularity-skewed draw over all items, so a model that reads
occupation x category beats popularity while popularity stays a real baseline. Items have a
category, a price, a name and a description (text); users an occupation, a city, an age and a
``recent_items`` list equal to their interactions: the same label leak as the upstream
correlated dataset, so the leak guard is exercised by default.

    python -m universal.synthetic --out data/universal-synthetic/data.json
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from core.store import atomic_write_json

CATEGORIES = ["books", "garden", "kitchen", "music", "outdoor", "sports", "tech", "toys"]
OCCUPATIONS = ["librarian", "gardener", "chef", "musician", "ranger", "coach", "engineer", "teacher"]
ADJECTIVES = ["classic", "compact", "deluxe", "handmade", "modern", "portable", "rugged", "vintage"]
CITIES = ["Lyon", "Osaka", "Porto", "Quito", "Tartu"]


@dataclass(frozen=True)
class UniversalSpec:
    n_users: int = 400
    n_items: int = 120
    n_groups: int = 8
    min_len: int = 6
    max_len: int = 12
    p_taste: float = 0.8
    seed: int = 7


def generate(spec: UniversalSpec = UniversalSpec()) -> dict:
    rng = np.random.default_rng(spec.seed)
    groups = min(spec.n_groups, len(CATEGORIES))
    item_cat = np.arange(spec.n_items) % groups
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** 0.8
    popularity = popularity[rng.permutation(spec.n_items)]
    items = []
    for i in range(spec.n_items):
        cat = CATEGORIES[item_cat[i]]
        adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        items.append({"item_id": i + 1, "categorical": {"category": cat},
                      "continuous": {"price": round(float(rng.lognormal(3 + item_cat[i] * 0.2, 0.4)), 2)},
                      "text": {"name": f"{adj} {cat} item {i + 1}",
                               "description": f"A {adj} piece for anyone into {cat}."}})
    users, interactions = [], []
    start = datetime(2024, 1, 1)
    for u in range(spec.n_users):
        g = int(rng.integers(groups))
        n = int(rng.integers(spec.min_len, spec.max_len + 1))
        own = np.flatnonzero(item_cat == g)
        chosen: list[int] = []
        while len(chosen) < n:
            pool = own if rng.random() < spec.p_taste else np.arange(spec.n_items)
            weights = popularity[pool] / popularity[pool].sum()
            item = int(rng.choice(pool, p=weights))
            if item not in chosen:
                chosen.append(item)
        # time order is a random order of the chosen items, so held-out items follow the same
        # taste/popularity mix as training ones (a user's category is not used up first)
        chosen = [chosen[j] for j in rng.permutation(n)]
        days = np.sort(rng.choice(365, n, replace=False))
        for item, day in zip(chosen, days):
            interactions.append({"user_id": u + 1, "item_id": item + 1,
                                 "timestamp": (start + timedelta(days=int(day), minutes=u)).isoformat()})
        users.append({"user_id": u + 1, "categorical": {"occupation": OCCUPATIONS[g], "city": CITIES[rng.integers(len(CITIES))]},
                      "continuous": {"age": float(rng.integers(18, 70))},
                      "temporal": {"recent_items": [c + 1 for c in chosen]}})
    return {"user_data": users, "item_data": items, "interactions": interactions}


def ensure(path: str | Path, spec: UniversalSpec = UniversalSpec(), log=print) -> Path:
    """Write the default dataset to ``path`` unless it exists."""
    path = Path(path)
    if not path.is_file():
        atomic_write_json(path, generate(spec), indent=None)
        log(f"generated the default universal dataset -> {path}")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/universal-synthetic/data.json")
    p.add_argument("--users", type=int, default=UniversalSpec.n_users)
    p.add_argument("--items", type=int, default=UniversalSpec.n_items)
    p.add_argument("--seed", type=int, default=UniversalSpec.seed)
    args = p.parse_args(argv)
    atomic_write_json(args.out, generate(UniversalSpec(n_users=args.users, n_items=args.items, seed=args.seed)), indent=None)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from core.cli import run

    run(main)

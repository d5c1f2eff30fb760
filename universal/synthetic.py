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
import json
import time
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


# the scale benchmark's file (benchmarks/universal.py scale): every feature type, streamed to disk
SCALE_ADJ = ["classic", "compact", "deluxe", "handmade", "modern", "portable", "rugged", "vintage", "smart", "eco"]
SCALE_NOUN = ["lamp", "kettle", "chair", "backpack", "speaker", "jacket", "drill", "blender", "tent", "watch", "novel",
              "puzzle", "racket", "guitar", "camera", "mug", "scarf", "helmet", "board", "clock"]


def generate_scale(out_dir: str | Path, interactions: int, users: int, items: int, seed: int = 0,
                   img_dim: int = 32) -> dict:
    """Write ``out_dir/data.json`` (streamed, never one object in memory) and ``out_dir/images/<item>.npy``;
    return ``{"titles": item titles, "interactions": count}``.

    Users: categorical occupation/country, continuous age/income, temporal recent_items (their
    items in time order: the leak guard restricts it). Items: text title (unique), categorical
    category + tags (a list), continuous price, temporal weekly_views (a numeric series), image
    (an ``img_dim``-float vector). Each user draws from their occupation's preferred categories
    with probability 0.7, else by popularity; ``interactions`` is exact."""
    out_dir, n_inter, n_users, n_items = Path(out_dir), interactions, users, items
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    n_cat, n_occ = 50, 20
    item_cat = rng.integers(n_cat, size=n_items)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    by_cat = [np.flatnonzero(item_cat == c) for c in range(n_cat)]
    occ = rng.integers(n_occ, size=n_users)
    prefers = [rng.choice(n_cat, 3, replace=False) for _ in range(n_occ)]
    lengths = np.full(n_users, n_inter // n_users)
    lengths[: n_inter - lengths.sum()] += 1
    lengths = np.maximum(lengths + rng.integers(-4, 5, size=n_users), 3)
    diff = n_inter - int(lengths.sum())  # restore the exact total
    while diff:
        idx = rng.integers(n_users, size=abs(diff))
        step = 1 if diff > 0 else -1
        lengths = lengths.copy()
        np.add.at(lengths, idx, step)
        lengths = np.maximum(lengths, 3)
        diff = n_inter - int(lengths.sum())
    titles = []
    for i in range(n_items):
        np.save(out_dir / "images" / f"{i + 1}.npy", (rng.standard_normal(img_dim) + item_cat[i] % 7).astype(np.float32))
        titles.append(f"{SCALE_ADJ[i % len(SCALE_ADJ)]} {SCALE_NOUN[(i // len(SCALE_ADJ)) % len(SCALE_NOUN)]} {i + 1} "
                      f"for category {item_cat[i]}")
    t0 = 1_700_000_000
    with open(out_dir / "data.json.tmp", "w") as fh:
        fh.write('{"item_data": [')
        for i in range(n_items):
            rec = {"item_id": i + 1, "text": {"title": titles[i]},
                   "categorical": {"category": f"c{item_cat[i]}",
                                   "tags": [f"t{x}" for x in rng.choice(200, 1 + i % 3, replace=False)]},
                   "continuous": {"price": round(float(rng.lognormal(3, 0.5)), 2)},
                   "temporal": {"weekly_views": [int(x) for x in rng.poisson(5 + 50 * pop[i] * n_items / 10, 8)]},
                   "image": {"thumb": f"images/{i + 1}.npy"}}
            fh.write(("," if i else "") + json.dumps(rec, separators=(",", ":")))
        fh.write('], "user_data": [')
        inter_chunks = []
        for u in range(n_users):
            n = int(lengths[u])
            own = np.concatenate([by_cat[c] for c in prefers[occ[u]]])
            k_own = int(rng.binomial(n, 0.7))
            picks = set(rng.choice(own, min(k_own, len(own)), replace=False).tolist()) if len(own) else set()
            while len(picks) < n:
                picks.update(rng.choice(n_items, n - len(picks), p=pop).tolist())
            chosen = rng.permutation(np.fromiter(picks, np.int64))[:n] + 1
            times = t0 + np.sort(rng.choice(365 * 86400, n, replace=False))
            rec = {"user_id": u + 1, "categorical": {"occupation": f"o{occ[u]}", "country": f"k{rng.integers(50)}"},
                   "continuous": {"age": float(rng.integers(18, 80)), "income": round(float(rng.lognormal(10, 0.6)), 0)},
                   "temporal": {"recent_items": chosen.tolist()}}
            fh.write(("," if u else "") + json.dumps(rec, separators=(",", ":")))
            inter_chunks.append(",".join(f'{{"user_id":{u + 1},"item_id":{i},"timestamp":{t}}}'
                                         for i, t in zip(chosen.tolist(), times.tolist())))
        fh.write('], "interactions": [')
        fh.write(",".join(inter_chunks))
        fh.write("]}")
    (out_dir / "data.json.tmp").replace(out_dir / "data.json")
    return {"titles": titles, "interactions": int(lengths.sum())}


def generate_scale_warm(out_dir: str | Path, interactions: int, users: int, items: int, seed: int = 0) -> dict:
    """``generate_scale``, then the item titles encoded once into the text cache (``core.text``),
    so that a fit on the data reads them warm: the counts, the file's ``bytes`` and the seconds
    of each step (``generate_seconds``, ``text_encode_seconds``, cold cache)."""
    from core.text import encode_texts

    t0 = time.perf_counter()
    info = generate_scale(out_dir, interactions, users, items, seed=seed)
    t1 = time.perf_counter()
    encode_texts(info["titles"], show_progress=False)
    t2 = time.perf_counter()
    return {"generate_seconds": round(t1 - t0, 1), "text_encode_seconds": round(t2 - t1, 1), "texts": len(info["titles"]),
            "interactions": info["interactions"], "users": users, "items": items,
            "bytes": (Path(out_dir) / "data.json").stat().st_size}


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

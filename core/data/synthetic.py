"""The embedded default dataset: deterministic, two domains, planted sequential structure.

Generated from a seed, so a fresh clone needs no download. Each domain's items fall into
clusters; every item has a fixed successor inside its cluster. A user has a preferred
cluster index shared by both domains (the cross-domain signal) and walks:

- to the current item's successor with probability ``p_successor`` (sequential signal a
  sequence model must learn and popularity cannot),
- to a random item of their preferred cluster with probability ``p_taste``,
- otherwise to an item drawn from a Zipf popularity law (so popularity is a real baseline).

No user repeats an item within a domain. The two domains' events are interleaved in time.
Written as three prepared datasets: ``<out>`` (both domains merged, with ``item_domain``),
``<out>-a`` and ``<out>-b`` (one domain each, own contiguous item indexes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.sequences import SequenceData

DOMAINS = ("A", "B")


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 1000
    n_items_per_domain: int = 300
    n_clusters: int = 10
    min_len: int = 6
    max_len: int = 30
    p_successor: float = 0.6
    p_taste: float = 0.25
    zipf_a: float = 1.1
    seed: int = 2024


def _walk(rng: np.random.Generator, spec: SyntheticSpec, taste: int, successor: np.ndarray, cluster_items: list,
          popularity: np.ndarray, length: int) -> list[int]:
    n = spec.n_items_per_domain
    seen: set[int] = set()
    seq: list[int] = []
    current = int(rng.choice(cluster_items[taste]))
    for _ in range(length):
        seq.append(current)
        seen.add(current)
        r = rng.random()
        if r < spec.p_successor:
            nxt = int(successor[current])
        elif r < spec.p_successor + spec.p_taste:
            nxt = int(rng.choice(cluster_items[taste]))
        else:
            nxt = int(rng.choice(n, p=popularity))
        tries = 0
        while nxt in seen and tries < 20:  # no repeats: fall back to a popularity draw
            nxt = int(rng.choice(n, p=popularity))
            tries += 1
        if nxt in seen:
            nxt = next(i for i in range(n) if i not in seen)
        current = nxt
    return seq


def user_tastes(spec: SyntheticSpec = SyntheticSpec()) -> np.ndarray:
    """The planted preferred cluster of every user (index ``u`` is user ``u{u:05d}``): the
    latent truth that a user-profile source would describe and a model must infer."""
    return np.random.default_rng(spec.seed).integers(0, spec.n_clusters, spec.n_users)


def generate(spec: SyntheticSpec = SyntheticSpec()) -> tuple[dict[str, SequenceData], dict]:
    """Datasets keyed ``merged``, ``A``, ``B`` and item side information keyed by raw id."""
    rng = np.random.default_rng(spec.seed)
    n = spec.n_items_per_domain
    item_side, domain_seqs = {}, {}
    tastes = rng.integers(0, spec.n_clusters, spec.n_users)  # first draw: the same as user_tastes(spec)
    for d, dom in enumerate(DOMAINS):
        cluster_of = rng.permutation(np.arange(n) % spec.n_clusters)
        cluster_items = [np.flatnonzero(cluster_of == c) for c in range(spec.n_clusters)]
        successor = np.empty(n, dtype=np.int64)
        for members in cluster_items:
            order = rng.permutation(members)
            successor[order] = np.roll(order, -1)  # a cycle through the cluster
        weights = 1.0 / np.arange(1, n + 1) ** spec.zipf_a
        popularity = np.empty(n)
        popularity[rng.permutation(n)] = weights / weights.sum()
        lengths = rng.integers(spec.min_len, spec.max_len + 1, spec.n_users)
        domain_seqs[dom] = [_walk(rng, spec, int(tastes[u]), successor, cluster_items, popularity, int(lengths[u]))
                            for u in range(spec.n_users)]
        for i in range(n):
            item_side[f"{dom}{i}"] = {"title": f"{dom}-item {i}", "category": f"{dom}-cluster {cluster_of[i]}",
                                      "domain": dom}

    user_ids = [f"u{u:05d}" for u in range(spec.n_users)]
    raw_items = [f"{dom}{i}" for dom in DOMAINS for i in range(n)]
    out: dict[str, SequenceData] = {}
    merged, merged_ts = [], []
    per_domain = {dom: ([], []) for dom in DOMAINS}
    for u in range(spec.n_users):
        events = []
        for d, dom in enumerate(DOMAINS):
            seq = domain_seqs[dom][u]
            # interleave: each domain's events at sorted random times in one shared window
            times = np.sort(rng.choice(10_000_000, len(seq), replace=False)) * 2 + d  # distinct across domains
            events += [(int(t), d * n + item + 1) for t, item in zip(times, seq)]
            per_domain[dom][0].append([item + 1 for item in seq])
            per_domain[dom][1].append([int(t) for t in times])
        events.sort()
        merged.append([e[1] for e in events])
        merged_ts.append([1_600_000_000 + e[0] for e in events])
    item_domain = np.concatenate([[-1], np.repeat(np.arange(len(DOMAINS)), n)]).astype(np.int8)
    meta = {"source": "synthetic", "spec": spec.__dict__, "domains": list(DOMAINS)}
    out["merged"] = SequenceData.from_lists(merged, 2 * n, user_ids, raw_items, merged_ts, item_domain=item_domain,
                                            meta={**meta, "notes": "both domains, time-ordered; item_domain 0=A 1=B"})
    for d, dom in enumerate(DOMAINS):
        seqs, ts = per_domain[dom]
        out[dom] = SequenceData.from_lists(seqs, n, user_ids, raw_items[d * n:(d + 1) * n],
                                           [[1_600_000_000 + t for t in row] for row in ts],
                                           meta={**meta, "notes": f"domain {dom} only", "domain": dom})
    return out, item_side


def synthetic_prepared(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> list:
    """The three datasets as ``Prepared`` records for ``core.data.prepare``'s writer."""
    from core.data.prepare.common import Prepared

    out_dir = Path(out_dir)
    datasets, item_side = generate(spec)
    names = {"merged": out_dir.name, "A": out_dir.name + "-a", "B": out_dir.name + "-b"}
    return [
        Prepared(name=names[key], data=data, preparer="synthetic", source=Path("<generated>"),
                 out=out_dir.with_name(names[key]), notes=[data.meta["notes"]],
                 item_side={raw: item_side[raw] for raw in data.item_ids})
        for key, data in datasets.items()
    ]


def prepare_synthetic(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> dict[str, Path]:
    """Write ``out_dir`` (merged), ``out_dir-a`` and ``out_dir-b``; returns their paths."""
    from core.data.prepare.common import write_prepared

    return {p.name: write_prepared(p) for p in synthetic_prepared(out_dir, spec)}


def add_args(parser) -> None:
    d = SyntheticSpec()
    parser.add_argument("--users", type=int, default=d.n_users)
    parser.add_argument("--items-per-domain", type=int, default=d.n_items_per_domain)
    parser.add_argument("--clusters", type=int, default=d.n_clusters)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--name", default="synthetic", help="folder name; -a/-b are added for the single domains")


def run(args) -> list:
    from core.data.prepare.common import default_out
    from core.errors import DataError

    if args.users < 1 or args.items_per_domain < args.clusters or args.clusters < 1:
        raise DataError("synthetic: need users >= 1, clusters >= 1 and items-per-domain >= clusters")
    spec = SyntheticSpec(n_users=args.users, n_items_per_domain=args.items_per_domain, n_clusters=args.clusters,
                         seed=args.seed)
    return synthetic_prepared(Path(args.out) if args.out else default_out(args.name), spec)

"""Catalog-scale synthetic workloads, streamed to disk (``python -m core.data.prepare synthetic-large``).

    python -m core.data.prepare synthetic-large --interactions 10000000 --items 1000000 \\
        --users 500000 --alpha 1.0 --seed 0 --out data/synthetic-10m

The output is a prepared dataset in the memory-mappable layout of ``core.data.sequences``
(``offsets.npy`` + ``items.npy`` instead of ``sequences.npz``). Users are generated in
chunks of about ``--chunk`` interactions and each chunk is written into a memory-mapped
``items.npy`` at once, so peak memory is O(users + items + chunk), never O(interactions).

The process:

- item popularity follows a power law: the item of popularity rank ``r`` (0-based) is drawn
  with probability proportional to ``(r + 1) ** -alpha``; ranks map to item indexes through a
  random permutation, so an item's index says nothing about its popularity;
- planted sequential structure: items are grouped in blocks of ``--block`` consecutive
  popularity ranks; each item's successor is the next rank in its block (cyclically). A step
  follows the successor with probability ``--p-successor``, otherwise it is a fresh popularity
  draw. Successors have near-equal popularity, so the rank-frequency law keeps its exponent;
- sequence lengths: ``--min-len`` plus a multinomial share of the remaining interactions with
  log-normal user weights (a heavy tail of active users); the total is exact.

Repeats within a user are allowed (as in real logs). The data are a function of the seed
and all parameters, ``--chunk`` included (each chunk draws from its own seeded stream); the
spec is recorded in meta.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from core.errors import DataError
from core.store import atomic_path, atomic_save_npy, atomic_write_json


@dataclass(frozen=True)
class LargeSpec:
    interactions: int = 10_000_000
    items: int = 1_000_000
    users: int = 500_000
    alpha: float = 1.0  # popularity exponent of the rank-frequency law
    p_successor: float = 0.5
    block: int = 8  # items per successor cycle
    min_len: int = 5
    length_sigma: float = 1.0  # log-normal spread of user activity
    chunk: int = 1_000_000  # interactions generated and written at a time
    seed: int = 0

    def check(self) -> None:
        if self.users < 1 or self.items < 2 or self.interactions < 1:
            raise DataError("synthetic-large: --users, --items and --interactions must be positive (items >= 2)")
        if self.interactions < self.users * self.min_len:
            raise DataError(f"synthetic-large: --interactions {self.interactions} < --users x --min-len "
                            f"({self.users} x {self.min_len}); lower --users or --min-len")
        if not 0 <= self.p_successor < 1 or self.alpha < 0 or self.block < 1 or self.chunk < 1 or self.min_len < 1:
            raise DataError("synthetic-large: need 0 <= --p-successor < 1, --alpha >= 0, --block >= 1, "
                            "--chunk >= 1, --min-len >= 1")


def popularity_cdf(n_items: int, alpha: float) -> np.ndarray:
    """CDF over popularity ranks 0..n-1 of p(r) ~ (r + 1)^-alpha (float64, last entry 1)."""
    w = np.arange(1, n_items + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return cdf


def user_lengths(spec: LargeSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-user sequence lengths (>= min_len) summing to exactly ``spec.interactions``."""
    weights = rng.lognormal(0.0, spec.length_sigma, spec.users)
    extra = rng.multinomial(spec.interactions - spec.users * spec.min_len, weights / weights.sum())
    return (extra + spec.min_len).astype(np.int64)


def _chunk_ranks(lengths: np.ndarray, spec: LargeSpec, cdf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Popularity ranks of all interactions of a run of users, oldest first per user.

    Vectorised over the chunk: a position either restarts with a popularity draw or follows
    the successor of the previous item; ``k`` successor steps after a restart at rank ``r``
    give rank ``start(r) + (r - start(r) + k) mod size(r)`` (the cycle of r's block).
    """
    n = int(lengths.sum())
    draws = np.searchsorted(cdf, rng.random(n), side="right").clip(max=len(cdf) - 1)
    restart = rng.random(n) >= spec.p_successor
    firsts = np.cumsum(lengths) - lengths
    restart[firsts] = True  # every user starts with a fresh draw
    pos = np.arange(n)
    last = np.maximum.accumulate(np.where(restart, pos, 0))
    base = draws[last]
    steps = pos - last
    start = (base // spec.block) * spec.block
    size = np.minimum(spec.block, len(cdf) - start)
    return start + (base - start + steps) % size


def _write_id_list(path: Path, n: int) -> None:
    """JSON list of raw ids 1..n, written in pieces (no n-element Python list at once)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("[")
        step = 1 << 18
        for s in range(1, n + 1, step):
            fh.write(("," if s > 1 else "") + ",".join(map(str, range(s, min(n, s + step - 1) + 1))))
        fh.write("]\n")


def generate_large(out: str | Path, spec: LargeSpec, name: str | None = None, progress: bool = True) -> dict:
    """Write the dataset folder ``out``; returns its meta.json content."""
    spec.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # an interrupted run must not look complete
    t0 = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    rank_to_item = (rng.permutation(spec.items) + 1).astype(np.int32)
    lengths = user_lengths(spec, rng)
    offsets = np.zeros(spec.users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cdf = popularity_cdf(spec.items, spec.alpha)
    # the content hash of core.store.fingerprint_arrays(offsets, items), fed chunk by chunk
    digest = hashlib.sha256()
    digest.update(str(offsets.dtype).encode())
    digest.update(str(offsets.shape).encode())
    digest.update(offsets.tobytes())
    digest.update(str(np.dtype(np.int32)).encode())
    digest.update(str((spec.interactions,)).encode())

    fd, tmp = tempfile.mkstemp(prefix=".items.npy.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        items = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(spec.interactions,))
        # user ranges of about ``chunk`` interactions each; every chunk has its own seeded stream
        bounds = np.searchsorted(offsets, np.arange(0, spec.interactions, spec.chunk), side="right") - 1
        bounds = np.unique(np.append(bounds, spec.users))
        seeds = np.random.SeedSequence([spec.seed, 1]).spawn(len(bounds) - 1)
        for (u0, u1), ss in tqdm(list(zip(zip(bounds[:-1], bounds[1:]), seeds)), desc="synthetic-large",
                                 disable=not progress, mininterval=5.0):
            ranks = _chunk_ranks(lengths[u0:u1], spec, cdf, np.random.default_rng(ss))
            piece = rank_to_item[ranks]
            items[offsets[u0]:offsets[u1]] = piece
            digest.update(piece.tobytes())
        items.flush()
        del items
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out / "items.npy")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    (out / "sequences.npz").unlink(missing_ok=True)  # the npy layout wins; drop a stale npz
    atomic_save_npy(out / "offsets.npy", offsets)
    _write_id_list(out / "user_ids.json", spec.users)
    _write_id_list(out / "item_ids.json", spec.items)
    meta = {
        "format_version": 1, "name": name or out.name, "preparer": "synthetic-large", "source": "<generated>",
        "layout": "npy", "spec": asdict(spec),
        "notes": ["power-law popularity (rank exponent alpha), successor cycles over blocks of near-equal "
                  "popularity, log-normal user activity; repeats allowed; no timestamps"],
        "n_users": spec.users, "n_items": spec.items, "n_interactions": spec.interactions,
        "fingerprint": digest.hexdigest()[:16], "generate_seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(out / "meta.json", meta)  # last: marks the folder complete
    return meta


def repack_npz(out: str | Path) -> None:
    """Rewrite a generated folder in the ``sequences.npz`` layout: loaded whole into memory
    instead of memory-mapped (a like-for-like comparison with tools that hold their data in RAM)."""
    out = Path(out)
    np.savez(out / "sequences.npz", offsets=np.load(out / "offsets.npy"), items=np.load(out / "items.npy"))
    meta = read_meta(out)
    (out / "meta.json").write_text(json.dumps({**meta, "layout": "npz"}, indent=1))
    for name in ("offsets.npy", "items.npy"):
        (out / name).unlink()


def fit_popularity_exponent(items: np.ndarray, n_items: int, min_count: int = 20) -> float:
    """Slope of log(frequency) against log(rank) over the ranks with at least ``min_count``
    interactions (the noisy tail would bias it), returned as a positive exponent."""
    counts = np.sort(np.bincount(np.asarray(items), minlength=n_items + 1)[1:])[::-1]
    keep = counts >= min_count
    ranks = np.arange(1, len(counts) + 1)[keep]
    if len(ranks) < 10:
        raise ValueError("too few items above min_count to fit an exponent")
    slope = np.polyfit(np.log(ranks), np.log(counts[keep]), 1)[0]
    return float(-slope)


# --------------------------------------------------------------------------- preparer hooks
def add_args(parser) -> None:
    d = LargeSpec()
    parser.add_argument("--interactions", type=int, default=d.interactions)
    parser.add_argument("--items", type=int, default=d.items)
    parser.add_argument("--users", type=int, default=d.users)
    parser.add_argument("--alpha", type=float, default=d.alpha, help="popularity exponent (rank-frequency slope)")
    parser.add_argument("--p-successor", type=float, default=d.p_successor,
                        help="probability that the next item is the planted successor")
    parser.add_argument("--block", type=int, default=d.block, help="items per successor cycle")
    parser.add_argument("--min-len", type=int, default=d.min_len)
    parser.add_argument("--chunk", type=int, default=d.chunk, help="interactions generated and written at a time")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--name", default="synthetic-large", help="folder name under data/ (without --out)")


class _LargeJob:
    """What ``core.data.prepare`` writes for this preparer (its own streamed format)."""

    def __init__(self, out: Path, spec: LargeSpec, name: str) -> None:
        self.out, self.spec, self.name = out, spec, name

    def write(self) -> str:
        meta = generate_large(self.out, self.spec, self.name)
        return (f"prepared {self.name}: {meta['n_users']} users, {meta['n_items']} items, "
                f"{meta['n_interactions']} interactions -> {self.out} ({meta['generate_seconds']:.1f}s)")


def run(args) -> list:
    from core.data.prepare.common import default_out

    spec = LargeSpec(interactions=args.interactions, items=args.items, users=args.users, alpha=args.alpha,
                     p_successor=args.p_successor, block=args.block, min_len=args.min_len, chunk=args.chunk,
                     seed=args.seed)
    spec.check()  # before anything is written
    out = Path(args.out) if args.out else default_out(args.name)
    return [_LargeJob(out, spec, Path(out).name)]


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))

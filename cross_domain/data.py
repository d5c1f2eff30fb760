"""Data of the cross-domain pipeline: the two domains, the cold-start protocol, training rows
and the per-user source inputs.

- ``load_domains``: each domain's full sequences (own item indexes 1..n) from a prepared
  two-domain folder, optionally capped by the seed's ``max_items_*`` samples.
- ``cold_protocol``: the target's leave-one-out split where a ``cold.fraction`` of the
  evaluated users keeps only 0..``cold.k`` items before each held-out one (and trains on
  those alone); users whose whole history is that short are cold as they are. Validation
  and test targets are the same as without the cut, so cold and warm users are scored on
  the same events as an uncut run.
- ``BosRows``: next-item training rows that start with a begin token (``model.bos``), so a
  user with no target history still has a state to score from.
- ``SourceInputs``: per-user source vectors (zero row = none) and source item histories.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data.batches import trim_padding
from core.data.domains import DOMAIN_CODES, load_domain_views, restrict_to_domain
from core.data.sequences import SequenceData
from core.data.splits import EvalSplit, Split, padded_prefixes
from core.errors import ConfigError, DataError
from core.store import aligned_vectors as align_rows, load_embeddings

EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class Domains:
    """Both domains' full sequences over the same users (same order), local item indexes."""

    source: SequenceData
    target: SequenceData
    source_code: str  # A or B
    target_code: str
    source_name: str  # the data's own names, e.g. kitchen / food
    target_name: str
    folder: Path
    source_l2g: np.ndarray  # local item index -> index in the merged item space
    target_l2g: np.ndarray

    @property
    def user_ids(self) -> list:
        return self.target.user_ids


def resolve_domain(given: str, names: tuple[str, str], key: str) -> str:
    """A or B for a domain given by its name in the data (any case) or its code."""
    g = str(given).strip()
    for code, name in zip(DOMAIN_CODES, names):
        if g.lower() == str(name).lower():
            return code
    if g.upper() in DOMAIN_CODES:
        return g.upper()
    raise ConfigError(f"{key}={given!r} is not a domain of this dataset; use "
                      + " or ".join(f"{n} ({c})" for c, n in zip(DOMAIN_CODES, names)))


def _views(folder: Path, target_code: str):
    from core.seqrec import SYNTHETIC_NAMES, DataConfig, load_dataset

    if folder.name in SYNTHETIC_NAMES and not (folder / "meta.json").is_file():
        load_dataset(DataConfig(dataset=folder.name, data_root=str(folder.parent)))  # generated on first use
    return load_domain_views(folder, target_code)


def domain_names(folder: Path) -> tuple[str, str]:
    """The two domain names of a prepared folder (Food-Kitchen: food, kitchen)."""
    import json

    for meta in (folder / "meta.json", folder / "food_all" / "meta.json"):
        if meta.is_file():
            names = json.loads(meta.read_text(encoding="utf-8")).get("domains") or DOMAIN_CODES
            return str(names[0]), str(names[1])
    if not folder.is_dir():
        # otherwise the domain check below reports "not a domain of this dataset" for a folder that
        # was simply never prepared
        raise DataError(f"{folder}: no prepared dataset here; run `python -m core.data.prepare food-kitchen "
                        "--path ../shared/data/food-kitchen` (or `synthetic`), or set data.dataset")
    return DOMAIN_CODES[0], DOMAIN_CODES[1]


def cap_interactions(data: SequenceData, n: int, seed: int) -> SequenceData:
    """A uniform random sample of ``n`` interactions (order kept), as the seed sampled its rows."""
    if not n or n >= data.n_interactions:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data.n_interactions, n, replace=False))
    user_of = np.repeat(np.arange(data.n_users), data.lengths)
    offsets = np.zeros(data.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_of[keep], minlength=data.n_users), out=offsets[1:])
    pick = lambda a: a[keep] if a is not None else None  # noqa: E731
    return SequenceData(offsets, data.items[keep], data.n_items, data.user_ids, data.item_ids, pick(data.timestamps),
                        meta=dict(data.meta), ratings=pick(data.ratings))


def load_domains(cfg) -> Domains:
    """The source and target domains named by a ``CDDataConfig``."""
    folder = cfg.folder()
    names = domain_names(folder)
    target = resolve_domain(cfg.target, names, "data.target")
    source = resolve_domain(cfg.source, names, "data.source") if cfg.source else DOMAIN_CODES[1 - DOMAIN_CODES.index(target)]
    if source == target:
        raise ConfigError(f"data.source and data.target are both {names[DOMAIN_CODES.index(target)]!r}; "
                          "transfer needs two different domains")
    views = _views(folder, target)
    names = views.domain_names
    out = {}
    for code, full, cap in ((target, views.target_all, cfg.max_items_tgt), (source, views.view(source), cfg.max_items_src)):
        local, l2g = restrict_to_domain(full, views.item_domain, code)
        out[code] = (cap_interactions(local, cap, cfg.sample_seed + DOMAIN_CODES.index(code)), l2g)
    (t_data, t_l2g), (s_data, s_l2g) = out[target], out[source]
    if t_data.n_interactions == 0:
        raise DataError(f"{folder}: domain {names[DOMAIN_CODES.index(target)]!r} has no interactions")
    return Domains(s_data, t_data, source, target, names[DOMAIN_CODES.index(source)], names[DOMAIN_CODES.index(target)],
                   folder, s_l2g, t_l2g)


# --------------------------------------------------------------------------- cold-start protocol
@dataclass
class TargetProtocol:
    train: SequenceData  # what the target models train on (cold users: their few items only)
    valid: Split  # data = each evaluated user's visible history + the validation target
    test: Split
    is_cold: np.ndarray  # [n_users + 1] bool by 1-based user index
    kept: np.ndarray  # [n_users + 1] items a cut user keeps (-1 = not cut)

    def counts(self) -> dict:
        users = self.test.test.users
        cold = self.is_cold[users]
        cut = self.kept[users] >= 0
        return {"all": int(len(users)), "cold": int(cold.sum()), "warm": int((~cold).sum()), "cut": int(cut.sum()),
                "naturally_cold": int((cold & ~cut).sum()), "no_target_history": int((self.kept[users] == 0).sum())}


def cold_protocol(data: SequenceData, k: int, fraction: float, seed: int) -> TargetProtocol:
    """Leave-one-out on ``data`` with cold users (see the module docstring)."""
    n, lengths = data.n_users, data.lengths
    evaluable = lengths >= 3
    if not evaluable.any():
        raise DataError("no target user has 3 or more items: leave-one-out has nothing to evaluate")
    natural = evaluable & (lengths - 1 <= k)  # at most k items before the test target, uncut
    pool = np.flatnonzero(evaluable & ~natural)
    rng = np.random.default_rng(seed)
    cut = np.sort(rng.choice(pool, int(round(fraction * len(pool))), replace=False))
    kept = np.full(n + 1, -1, dtype=np.int64)
    kept[cut + 1] = rng.integers(0, k + 1, len(cut))  # "at most k": 0 = absent from target training
    train, valid, test = [], [], []
    for u in range(n):
        s = data.sequence(u + 1).astype(np.int64)
        m, keep = len(s), int(kept[u + 1])
        if m < 3:
            train.append(s)
            valid.append(EMPTY)
            test.append(EMPTY)
        elif keep < 0:
            train.append(s[:m - 2])
            valid.append(s[:m - 1])
            test.append(s)
        else:
            train.append(s[m - 2 - keep:m - 2])
            valid.append(s[m - 2 - keep:m - 1])
            test.append(s[m - 1 - keep:])
    users = np.flatnonzero(evaluable) + 1
    common = dict(n_items=data.n_items, user_ids=data.user_ids, item_ids=data.item_ids)
    splits = []
    for seqs in (valid, test):
        seq_data = SequenceData.from_lists(seqs, **common)
        ln = seq_data.lengths[users - 1]
        ev = EvalSplit(users, ln - 1, seq_data.items[seq_data.offsets[users - 1] + ln - 1].astype(np.int64))
        splits.append(Split(seq_data, np.zeros(n, dtype=np.int64), ev, ev, "cold-loo"))
    is_cold = np.zeros(n + 1, dtype=bool)
    is_cold[users] = natural[users - 1] | (kept[users] >= 0)
    return TargetProtocol(SequenceData.from_lists(train, **common), splits[0], splits[1], is_cold, kept)


def training_split(data: SequenceData) -> Split:
    """A split whose training part is all of ``data`` (what ``popularity_score_fn`` counts)."""
    empty = EvalSplit(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return Split(data, data.lengths.copy(), empty, empty, "train-only")


# --------------------------------------------------------------------------- training rows
def with_bos(inputs: torch.Tensor, bos: int) -> torch.Tensor:
    """Left-padded item rows with the begin token placed just before each row's first item."""
    lens = (inputs > 0).sum(1)
    out = torch.cat([inputs.new_zeros(len(inputs), 1), inputs], dim=1)
    out[torch.arange(len(out), device=out.device), out.shape[1] - 1 - lens] = bos
    return out


class BosRows:
    """Next-item rows over each user's first ``train_len`` items: input ``[BOS, i1 .. i(n-1)]``
    predicts ``[i1 .. in]`` (the last ``maxlen`` items). Every user with at least one item
    trains, the first item from the begin token. With ``side``, batches also carry each user's
    source side (``source``, ``source_history``), which the model's loss reads from the batch."""

    def __init__(self, data: SequenceData, train_len: np.ndarray, maxlen: int, bos: int, device=None,
                 side: "SourceInputs | None" = None) -> None:
        self.side = side
        users = np.flatnonzero(train_len >= 1) + 1
        targets = torch.as_tensor(padded_prefixes(data, users, train_len[users - 1], maxlen))
        self.users = torch.as_tensor(users, device=device)
        self.targets = targets.to(device)
        self.inputs = with_bos(targets[:, :-1], bos).to(device)
        self.lengths = (self.targets > 0).sum(1)

    def __len__(self) -> int:
        return len(self.users)

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        targets = trim_padding(self.targets[index])
        users = self.users[index]
        side = self.side(users) if self.side is not None else {}
        return {"input": self.inputs[index][:, -targets.shape[1]:], "target": targets, "users": users, **side}


# --------------------------------------------------------------------------- source inputs
class SourceInputs:
    """Per-user source side, rows by 1-based user index (row 0 unused): ``vectors`` [U+1, D]
    (a zero row = no source vector) and ``history`` [U+1, H] (last H source items, 0-padded)."""

    def __init__(self, vectors: np.ndarray | None, history: np.ndarray | None, device=None) -> None:
        pad = lambda a: np.vstack([np.zeros((1, a.shape[1]), a.dtype), a])  # noqa: E731
        self.vectors = torch.as_tensor(pad(vectors), dtype=torch.float32, device=device) if vectors is not None else None
        self.history = torch.as_tensor(pad(history), dtype=torch.long, device=device) if history is not None else None

    def __call__(self, users: torch.Tensor) -> dict:
        if self.vectors is None:
            return {}
        out = {"source": self.vectors[users]}
        if self.history is not None:
            out["source_history"] = self.history[users]
        return out

    @property
    def dim(self) -> int:
        return 0 if self.vectors is None else int(self.vectors.shape[1])

    @property
    def coverage(self) -> int:
        return 0 if self.vectors is None else int(self.vectors[1:].ne(0).any(1).sum())


def aligned_vectors(path: str | Path, user_ids: list) -> np.ndarray:
    """Rows of a vector file in the order of ``user_ids``; users it lacks get a zero row (no
    source vector: the model falls back to the sequence alone). See ``core.store.aligned_vectors``."""
    return align_rows(*load_embeddings(path), user_ids, mode="fill", source=path, what="source",
                      hint="python -m cross_domain train-source")


def source_histories(source: SequenceData, length: int) -> np.ndarray:
    """[U, length] last ``length`` source items of each user, left-padded with 0."""
    users = np.arange(1, source.n_users + 1)
    return padded_prefixes(source, users, source.lengths, length)

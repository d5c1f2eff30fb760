"""Two-domain views of one user set: the data contract of the cross-domain pipelines.

A ``DomainViews`` holds, for the same users in the same order and in one shared item space
(``item_domain`` says which domain each item index belongs to):

- ``a`` / ``b``: each domain's sequence as the models may train on it,
- ``cross``: both domains merged in time order,
- ``target_all``: the target domain's full sequences (its last two items are validation and
  test, so they are absent from ``a``/``b``/``cross`` on the target side).

This is exactly the layout of the TriGRec Food-Kitchen pickles (target Food: ``food_train``,
``kitchen_all``, ``cross_f_train``; target Kitchen: ``food_all``, ``kitchen_train``,
``cross_k_train``), and the synthetic default is cut the same way from its merged dataset.
Note the design inherited from those pickles: the *other* domain is seen in full, so its
events may be later in time than the target's held-out items.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import store
from core.data.sequences import SequenceData
from core.errors import ConfigError, DataError
from core.seqrec import ModelConfig

DOMAIN_CODES = ("A", "B")
FOOD_KITCHEN_VIEWS = {  # target -> (a, b, cross, target_all) pickle stems
    "A": ("food_train", "kitchen_all", "cross_f_train", "food_all"),
    "B": ("food_all", "kitchen_train", "cross_k_train", "kitchen_all"),
}


@dataclass
class DomainViews:
    a: SequenceData
    b: SequenceData
    cross: SequenceData
    target_all: SequenceData
    target: str  # "A" or "B"
    domain_names: tuple[str, str]  # e.g. ("food", "kitchen")
    source: str

    @property
    def target_name(self) -> str:
        return self.domain_names[DOMAIN_CODES.index(self.target)]

    @property
    def n_items(self) -> int:
        return self.cross.n_items

    @property
    def item_domain(self) -> np.ndarray:
        return self.cross.item_domain

    def view(self, code: str) -> SequenceData:
        return {"A": self.a, "B": self.b}[code]


def check_target(target: str, key: str = "target") -> str:
    t = str(target).strip().upper()
    if t not in DOMAIN_CODES:
        raise ConfigError(f"{key}={target!r}: use A or B (the first or second domain, e.g. A = food, B = kitchen)")
    return t


# ------------------------------------------------------------------ configs of two-domain runs (TriGRec)
@dataclass(frozen=True)
class DomainDataConfig:
    dataset: str = "synthetic"  # prepared folder name under data_root (or a path): synthetic | food-kitchen
    data_root: str = ""  # default <repo>/data
    target: str = "A"  # the target domain: A (e.g. food) or B (kitchen)
    c2dsr_dir: str = ""  # C2DSR valid/test text files (Food-Kitchen); "" = not used

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", check_target(self.target, "data.target"))

    def folder(self) -> Path:
        return store.dataset_folder(self.dataset, self.data_root)


@dataclass(frozen=True)
class BERT4RecModelConfig(ModelConfig):
    """The TriGRec encoders' settings (each is a BERT4Rec); ``core.seqrec.ModelConfig`` with
    stage-1 defaults. Stage 2's model config extends it."""

    model_type: str = "bert4rec"
    mask_prob: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_type != "bert4rec":
            raise ConfigError(f"model.model_type {self.model_type!r}: TriGRec's encoders are BERT4Rec")
        if self.cl_weight:
            raise ConfigError("model.cl_weight: TriGRec's losses read one masking per row; the contrastive views are "
                              "for plain BERT4Rec (distillation.training): set model.cl_weight=0")


def domain_folder_name(dataset_folder: Path, domain_names: tuple[str, str], target: str) -> str:
    """``food`` / ``kitchen`` for Food-Kitchen (the seed's layout); ``<dataset>-<A|B>`` otherwise."""
    name = domain_names["AB".index(target)]
    return name if name not in ("A", "B") else f"{dataset_folder.name}-{target}"


def user_vectors_dir(cfg_home: str, domain: str, run_name: str = "") -> Path:
    """Where TriGRec stage 1 exports (and stage 2 looks for) user vectors; a named stage-1 run
    exports into its own sub-folder, so that it never replaces the default run's vectors."""
    out = store.embeddings_dir("user_representation_module", domain, cfg_home or None)
    return out / store.check_name(run_name, "run name") if run_name else out


def load_views(cfg: DomainDataConfig) -> tuple[DomainViews, Path]:
    """The two-domain views named by a ``DomainDataConfig``; the synthetic default is
    generated on first use."""
    from core.seqrec import SYNTHETIC_NAMES, DataConfig, load_dataset

    folder = cfg.folder()
    if folder.name in SYNTHETIC_NAMES and not (folder / "meta.json").is_file():
        load_dataset(DataConfig(dataset=str(folder.name), data_root=str(folder.parent)))
    return load_domain_views(folder, cfg.target), folder


def load_domain_views(folder: str | Path, target: str) -> DomainViews:
    """Read the views from a prepared folder: Food-Kitchen (six sub-folders) or a merged
    two-domain dataset with ``item_domain`` and timestamps (the synthetic default)."""
    folder = Path(folder)
    target = check_target(target)
    if all((folder / stem / "meta.json").is_file() for stem in FOOD_KITCHEN_VIEWS[target]):
        views = [SequenceData.load(folder / stem) for stem in FOOD_KITCHEN_VIEWS[target]]
        # the preparer drops users whose sequence is empty; give them back an empty one
        users = views[2].user_ids
        views = [align_users(v, users, str(folder / stem)) for v, stem in zip(views, FOOD_KITCHEN_VIEWS[target])]
        out = DomainViews(*views, target=target, domain_names=("food", "kitchen"), source=str(folder))
    elif (folder / "meta.json").is_file():
        out = split_merged(SequenceData.load(folder), target, str(folder))
    else:
        raise DataError(f"{folder}: neither a merged two-domain dataset (meta.json) nor the six Food-Kitchen "
                        "folders; run `python -m core.data.prepare food-kitchen --path ../shared/data/food-kitchen` "
                        "or `python -m core.data.prepare synthetic`")
    _check_aligned(out)
    return out


def split_merged(merged: SequenceData, target: str, source: str = "") -> DomainViews:
    """Cut a merged, time-ordered two-domain dataset into the views (target loses its last 2)."""
    if merged.item_domain is None:
        raise DataError(f"{source or 'dataset'}: has no item_domain array; a two-domain dataset is needed "
                        "(e.g. `synthetic`, not `synthetic-a`)")
    dom = merged.item_domain
    t = DOMAIN_CODES.index(check_target(target))
    per_domain: list[list[np.ndarray]] = [[], []]
    cross = []
    for u in range(merged.n_users):
        seq = merged.sequence(u + 1)
        code = dom[seq]
        for d in (0, 1):
            per_domain[d].append(seq[code == d])
        own = np.flatnonzero(code == t)
        # the target's validation and test events (users with < 3 have none: leave-one-out
        # does not evaluate them, and the target view keeps all their items too)
        cross.append(np.delete(seq, own[-2:]) if len(own) >= 3 else seq)
    common = dict(n_items=merged.n_items, user_ids=merged.user_ids, item_ids=merged.item_ids, item_domain=dom)
    full = [SequenceData.from_lists(per_domain[d], **common) for d in (0, 1)]
    train_t = SequenceData.from_lists([s[:-2] if len(s) >= 3 else s for s in per_domain[t]], **common)
    a, b = (train_t, full[1]) if t == 0 else (full[0], train_t)
    names = tuple(merged.meta.get("domains", DOMAIN_CODES))
    return DomainViews(a, b, SequenceData.from_lists(cross, **common), full[t], DOMAIN_CODES[t],
                       (str(names[0]), str(names[1])), source)


def align_users(data: SequenceData, user_ids: list, source: str = "") -> SequenceData:
    """``data`` re-ordered to ``user_ids``; users it lacks get an empty sequence."""
    if data.user_ids == user_ids:
        return data
    row = {u: i for i, u in enumerate(data.user_ids)}
    extra = set(row) - set(user_ids)
    if extra:
        raise DataError(f"{source}: user {sorted(extra, key=str)[0]!r} is not in the cross view; the views must "
                        "describe the same users")
    seqs = [data.sequence(row[u] + 1) if u in row else np.zeros(0, dtype=np.int64) for u in user_ids]
    return SequenceData.from_lists(seqs, n_items=data.n_items, user_ids=user_ids, item_ids=data.item_ids,
                                   item_domain=data.item_domain, meta=data.meta)


def _check_aligned(v: DomainViews) -> None:
    for name, data in (("a", v.a), ("b", v.b), ("cross", v.cross), ("target_all", v.target_all)):
        if data.user_ids != v.cross.user_ids:
            raise DataError(f"{v.source}: view {name!r} lists other users than the cross view; "
                            "the views must share users in the same order")
        if data.n_items != v.cross.n_items:
            raise DataError(f"{v.source}: view {name!r} has {data.n_items} items, the cross view {v.cross.n_items}")
    if v.item_domain is None:
        raise DataError(f"{v.source}: the cross view has no item_domain array")


def restrict_to_domain(data: SequenceData, item_domain: np.ndarray, code: str) -> tuple[SequenceData, np.ndarray]:
    """The same sequences with items renumbered 1..n within domain ``code``.

    Returns the local dataset and ``local_to_global`` (index 0 = padding). Items of the
    other domain are an error: the caller passes a one-domain view."""
    local_to_global = domain_items(item_domain, code)
    to_local = global_to_local(local_to_global, len(item_domain))
    bad = data.items[to_local[data.items] == 0]
    if len(bad):
        raise DataError(f"item index {int(bad[0])} is not in domain {code}; expected a one-domain view")
    local = SequenceData(data.offsets.copy(), to_local[data.items], len(local_to_global) - 1,
                         list(data.user_ids), [data.item_ids[i - 1] for i in local_to_global[1:]],
                         timestamps=data.timestamps, meta=dict(data.meta))
    return local, local_to_global


def domain_items(item_domain: np.ndarray, code: str) -> np.ndarray:
    """``local_to_global`` of domain ``code``: its global item indexes in ascending order after a
    0 for padding (the local numbering ``restrict_to_domain`` gives)."""
    d = DOMAIN_CODES.index(check_target(code))
    return np.concatenate([[0], np.flatnonzero(item_domain == d)]).astype(np.int64)


def merged_item_index(target_l2g: np.ndarray, other_l2g: np.ndarray, n_global: int) -> tuple[np.ndarray, np.ndarray]:
    """The item space of a model over both domains that is scored on the target's catalog (the
    merged-domain peers of TriGRec and cross_domain): global item -> merged id, where the target's
    items keep their local ids 1..n_t (so score columns 0..n_t are the target catalog) and the other
    domain's local id ``s`` becomes ``n_t + s``; and merged id - 1 -> global item."""
    to_target, to_other = global_to_local(target_l2g, n_global), global_to_local(other_l2g, n_global)
    index = np.where(to_target > 0, to_target, np.where(to_other > 0, len(target_l2g) - 1 + to_other, 0))
    return index, np.concatenate([target_l2g[1:], other_l2g[1:]])


def global_to_local(local_to_global: np.ndarray, n_global: int) -> np.ndarray:
    """The inverse of ``local_to_global`` over ``n_global`` item indexes (0 = not in the domain)."""
    out = np.zeros(n_global, dtype=np.int64)
    out[local_to_global[1:]] = np.arange(1, len(local_to_global))
    return out

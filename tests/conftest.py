"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.store import REPO_ROOT

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_tiny_universal(path: Path, n_users: int, n_items: int, per_user: int, *, n_jobs: int = 2,
                         n_genres: int = 3, with_year: bool = False) -> Path:
    """A small universal-format JSON file: users with a categorical job, items with a
    categorical genre (and optionally a continuous year), ``per_user`` timestamped
    interactions per user whose items depend on the user (some structure to learn)."""
    from core.store import atomic_write_json

    items = [{"item_id": i, "categorical": {"genre": f"g{i % n_genres}"},
              **({"continuous": {"year": 1990 + i}} if with_year else {})} for i in range(n_items)]
    atomic_write_json(path, {
        "user_data": [{"user_id": f"u{u}", "categorical": {"job": f"j{u % n_jobs}"}} for u in range(n_users)],
        "item_data": items,
        "interactions": [{"user_id": f"u{u}", "item_id": (3 * u + k * (1 + u % 3)) % n_items,
                          "timestamp": 100 * k + u} for u in range(n_users) for k in range(per_user)]})
    return path


def write_synthetic_tree(root: Path, n_users: int, *, vectors: tuple[str, ...] = (),
                         universal: tuple[int, int, int] | None = None) -> Path:
    """The tests' tiny tree: a two-domain synthetic dataset ``root/syn``, stand-in user vectors
    ``root/emb/<name>`` (8 dims, one row per user, drawn in the order given) and, with
    ``universal=(users, items, per_user)``, a universal-format ``root/uni.json``."""
    import numpy as np

    from core.data.sequences import SequenceData
    from core.data.synthetic import SyntheticSpec, prepare_synthetic
    from core.store import save_embeddings

    prepare_synthetic(root / "syn", SyntheticSpec(n_users=n_users, n_items_per_domain=40, n_clusters=2))
    if vectors:
        ids = SequenceData.load(root / "syn").user_ids
        rng = np.random.default_rng(0)
        for name in vectors:  # stand-ins for a stage-1 / source export
            save_embeddings(root / "emb", name, rng.normal(size=(len(ids), 8)), ids)
    if universal:
        write_tiny_universal(root / "uni.json", *universal)
    return root

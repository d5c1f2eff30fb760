"""Train/validation/test splits over a ``SequenceData``, all expressed as sequence prefixes.

Because every sequence is time-ordered, each split is a prefix length per user:

- ``train_len[u]``: the first ``train_len[u]`` items of user ``u`` are training data;
- an ``EvalSplit``: for each evaluated user, the history is the first ``hist_len`` items
  and the target is the next one.

Leave-one-out (default): the last item is the test target, the second-last the validation
target, the rest is training; users with fewer than 3 items only train. Temporal: two global
time cut-offs (quantiles of all timestamps); the first item at or after a cut-off is the
target, everything before it the history.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.data.sequences import SequenceData
from core.errors import DataError


@dataclass
class EvalSplit:
    users: np.ndarray  # [E] 1-based user indexes
    hist_len: np.ndarray  # [E] history = first hist_len items of the user
    targets: np.ndarray  # [E] item index to predict

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask_or_index) -> "EvalSplit":
        return EvalSplit(self.users[mask_or_index], self.hist_len[mask_or_index], self.targets[mask_or_index])


@dataclass
class Split:
    data: SequenceData
    train_len: np.ndarray  # [n_users]
    valid: EvalSplit
    test: EvalSplit
    kind: str = "loo"

    @property
    def train_users(self) -> np.ndarray:
        """1-based users with at least 2 training items (one input, one target)."""
        return np.flatnonzero(self.train_len >= 2) + 1


def leave_one_out(data: SequenceData) -> Split:
    lengths = data.lengths
    users = np.arange(1, data.n_users + 1)
    evaluable = lengths >= 3
    train_len = np.where(evaluable, lengths - 2, lengths)
    starts = data.offsets[:-1]
    ev_users = users[evaluable]
    valid = EvalSplit(ev_users, lengths[evaluable] - 2, data.items[starts[evaluable] + lengths[evaluable] - 2].astype(np.int64))
    test = EvalSplit(ev_users, lengths[evaluable] - 1, data.items[starts[evaluable] + lengths[evaluable] - 1].astype(np.int64))
    if len(ev_users) == 0:
        raise DataError("no user has 3 or more interactions: leave-one-out has nothing to evaluate")
    return Split(data, train_len, valid, test, "loo")


def temporal_split(data: SequenceData, valid_quantile: float = 0.8, test_quantile: float = 0.9) -> Split:
    if data.timestamps is None:
        raise DataError("temporal split needs timestamps; this dataset has none (use split=loo)")
    if not 0 < valid_quantile < test_quantile < 1:
        raise DataError("temporal split needs 0 < valid_quantile < test_quantile < 1")
    t_valid, t_test = np.quantile(data.timestamps, [valid_quantile, test_quantile])
    user_of = np.repeat(np.arange(data.n_users), data.lengths)
    starts = data.offsets[:-1]
    # per-user count of interactions before each cut-off = prefix length (sequences are sorted)
    before_valid = np.bincount(user_of[data.timestamps < t_valid], minlength=data.n_users)
    before_test = np.bincount(user_of[data.timestamps < t_test], minlength=data.n_users)
    lengths = data.lengths
    users = np.arange(1, data.n_users + 1)

    has_valid = (before_valid < lengths) & (before_valid >= 1)
    # the validation target must fall before the test cut-off
    has_valid &= before_valid < before_test
    valid = EvalSplit(users[has_valid], before_valid[has_valid], data.items[starts[has_valid] + before_valid[has_valid]].astype(np.int64))
    has_test = (before_test < lengths) & (before_test >= 1)
    test = EvalSplit(users[has_test], before_test[has_test], data.items[starts[has_test] + before_test[has_test]].astype(np.int64))
    return Split(data, before_valid, valid, test, "temporal")


def make_split(data: SequenceData, kind: str = "loo", valid_quantile: float = 0.8, test_quantile: float = 0.9) -> Split:
    if kind == "loo":
        return leave_one_out(data)
    if kind == "temporal":
        return temporal_split(data, valid_quantile, test_quantile)
    raise DataError(f"unknown split {kind!r}: use loo or temporal")


# --------------------------------------------------------------------------- padded views
def padded_prefixes(data: SequenceData, users: np.ndarray, prefix_len: np.ndarray, width: int) -> np.ndarray:
    """Last ``width`` items of each user's prefix, left-padded with 0: ``[len(users), width]``."""
    users = np.asarray(users, dtype=np.int64)
    starts = data.offsets[users - 1]
    ends = starts + np.asarray(prefix_len, dtype=np.int64)
    idx = ends[:, None] - width + np.arange(width)[None, :]
    valid = idx >= starts[:, None]
    return np.where(valid, data.items[np.clip(idx, 0, None)], 0).astype(np.int64)


def prefix_positions(data: SequenceData, users: np.ndarray, prefix_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, position-in-``data.items``) of every item in each user's prefix, vectorised."""
    users = np.asarray(users, dtype=np.int64)
    lens = np.asarray(prefix_len, dtype=np.int64)
    starts = data.offsets[users - 1]
    row_first = np.concatenate([[0], np.cumsum(lens)[:-1]])
    rows = np.repeat(np.arange(len(users)), lens)
    pos = np.repeat(starts - row_first, lens) + np.arange(int(lens.sum()))
    return rows, pos


def history_mask(data: SequenceData, users: np.ndarray, prefix_len: np.ndarray, device=None) -> torch.Tensor:
    """[len(users), n_items + 1] bool, True at every item in the user's full prefix (and padding)."""
    rows, pos = prefix_positions(data, users, prefix_len)
    cols = data.items[pos]
    mask = torch.zeros(len(users), data.n_items + 1, dtype=torch.bool, device=device)
    mask[torch.as_tensor(rows, device=device), torch.as_tensor(cols, dtype=torch.long, device=device)] = True
    mask[:, 0] = True
    return mask


def item_popularity(data: SequenceData, train_len: np.ndarray) -> np.ndarray:
    """Training interaction count per item index (length n_items + 1, entry 0 = 0)."""
    _, pos = prefix_positions(data, np.arange(1, data.n_users + 1), train_len)
    return np.bincount(data.items[pos], minlength=data.n_items + 1).astype(np.float64)

"""Evaluation events whose last transition the training data already holds verbatim.

The Food-Kitchen pickles' 34,117 "users" are overlapping windows of 16,579 Amazon users, so a
test event (previous item -> target) often stands, word for word, in another window's
training part; a model can then score it by recall of that other window rather than by what
it learnt about the person. The leak-controlled view keeps the events whose transition no
training sequence contains (events without a previous item have no transition and are kept).
The pickles cannot be regrouped by their real users (C2DSR's training file, which maps
windows to users, is not available), so the transition is the finest control the data allows.
"""
from __future__ import annotations

import numpy as np

from core.data.sequences import SequenceData


def transition_codes(data: SequenceData, lengths: np.ndarray | None = None) -> np.ndarray:
    """Sorted unique codes ``prev * (n_items + 1) + next`` of the consecutive item pairs within
    each user's first ``lengths[u]`` items (all items when ``lengths`` is None)."""
    lens = data.lengths if lengths is None else np.minimum(np.asarray(lengths, dtype=np.int64), data.lengths)
    starts = data.offsets[:-1]
    # position j of user u pairs (j, j + 1); both must lie inside the user's kept prefix
    n_pairs = np.maximum(lens - 1, 0)
    first = np.repeat(starts, n_pairs) + (np.arange(n_pairs.sum()) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs))
    items = data.items.astype(np.int64)
    return np.unique(items[first] * (data.n_items + 1) + items[first + 1])


def seen_transition(codes: np.ndarray, prev: np.ndarray, targets: np.ndarray, n_items: int) -> np.ndarray:
    """[E] bool: event ``prev[e] -> targets[e]`` is one of ``codes`` (``transition_codes``);
    an event with no previous item (``prev`` 0) is never seen."""
    prev, targets = np.asarray(prev, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    return (prev > 0) & np.isin(prev * (n_items + 1) + targets, codes)


def previous_items(data: SequenceData, users: np.ndarray, hist_len: np.ndarray) -> np.ndarray:
    """[E] the last history item of each event (``users`` 1-based, history = first ``hist_len``
    items); 0 where the history is empty."""
    users, hist_len = np.asarray(users, dtype=np.int64), np.asarray(hist_len, dtype=np.int64)
    out = np.zeros(len(users), dtype=np.int64)
    has = hist_len > 0
    out[has] = data.items[data.offsets[users[has] - 1] + hist_len[has] - 1]
    return out


def leak_free_users(train: SequenceData, train_len: np.ndarray | None, events: SequenceData, users: np.ndarray,
                    hist_len: np.ndarray) -> np.ndarray:
    """[n_users + 1] bool by 1-based user index: the user's evaluation event (history = first
    ``hist_len`` items of ``events``, target the next one) has a transition that no training
    sequence (``train``'s first ``train_len`` items per user) holds verbatim; users without an
    event are False."""
    users, hist_len = np.asarray(users, dtype=np.int64), np.asarray(hist_len, dtype=np.int64)
    targets = events.items[events.offsets[users - 1] + hist_len].astype(np.int64)
    seen = seen_transition(transition_codes(train, train_len), previous_items(events, users, hist_len), targets,
                           train.n_items)
    out = np.zeros(events.n_users + 1, dtype=bool)
    out[users] = ~seen
    return out

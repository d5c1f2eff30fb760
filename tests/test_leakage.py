"""core.data.leakage: the leak-controlled view's transition test, checked by hand."""
import numpy as np

from core.data.leakage import previous_items, seen_transition, transition_codes
from core.data.sequences import SequenceData


def _data(seqs, n_items=6):
    return SequenceData.from_lists(seqs, n_items=n_items, user_ids=list(range(len(seqs))),
                                   item_ids=list(range(1, n_items + 1)))


def test_transition_codes_by_hand():
    data = _data([[1, 2, 3], [4], [], [2, 5, 6]])
    m = 7  # n_items + 1
    assert transition_codes(data).tolist() == sorted([1 * m + 2, 2 * m + 3, 2 * m + 5, 5 * m + 6])
    # prefixes: user 1 keeps 2 items (1->2), user 4 keeps 1 (no pair), an over-long prefix is capped
    assert transition_codes(data, np.array([2, 5, 0, 1])).tolist() == [1 * m + 2]


def test_pairs_never_cross_a_user_boundary():
    data = _data([[1, 2], [3, 4]])
    assert 2 * 7 + 3 not in transition_codes(data).tolist()


def test_seen_transition_and_previous_items():
    train = _data([[1, 2, 3], [2, 5]])
    codes = transition_codes(train)
    full = _data([[1, 2, 3, 4], [6, 2, 5], [4]])
    users, hist_len = np.array([1, 2, 2, 3]), np.array([3, 2, 1, 0])
    targets = np.array([4, 5, 2, 4])
    prev = previous_items(full, users, hist_len)
    assert prev.tolist() == [3, 2, 6, 0]
    # 3->4 new; 2->5 in training; 6->2 new; no previous item: never seen
    assert seen_transition(codes, prev, targets, 6).tolist() == [False, True, False, False]


def test_leak_free_users_marks_each_users_event():
    from core.data.leakage import leak_free_users

    train = _data([[1, 2], [3, 4], [5]])
    events = _data([[1, 2, 3], [3, 4, 5], [5, 6]])
    # user 1: 2 -> 3 stands in no training sequence; user 2 (history [3], target 4): 3 -> 4 does;
    # user 3: history cut to nothing -> no transition, leak-free
    free = leak_free_users(train, None, events, np.array([1, 2, 3]), np.array([2, 1, 0]))
    assert free.tolist() == [False, True, False, True]

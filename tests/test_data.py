"""core.data: the sequence contract, splits, padded views, training batches, synthetic data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.data.batches import CausalDataset, ClozeDataset, random_prefixes, repeated_padding, sample_train_negatives
from core.data.sequences import IdMap, SequenceData
from core.data.splits import (
    history_mask,
    item_popularity,
    leave_one_out,
    make_split,
    padded_prefixes,
    prefix_positions,
    temporal_split,
)
from core.data.synthetic import SyntheticSpec, generate
from core.errors import DataError


def small_data(with_ts: bool = True) -> SequenceData:
    """u1: 1 2 3 4 5   u2: 3 1   u3: 2 4 6  (6 items)."""
    seqs = [[1, 2, 3, 4, 5], [3, 1], [2, 4, 6]]
    ts = [[10, 20, 30, 40, 50], [15, 25], [5, 35, 60]] if with_ts else None
    return SequenceData.from_lists(seqs, 6, ["ua", "ub", "uc"], [f"i{k}" for k in range(1, 7)], ts,
                                   meta={"name": "small", "notes": "hand-built"})


def uniform_data(n_users: int, length: int, n_items: int, seed: int = 0) -> SequenceData:
    """Every user has ``length`` distinct items (built with numpy, no Python loop over items)."""
    rng = np.random.default_rng(seed)
    items = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :length] + 1
    offsets = np.arange(n_users + 1) * length
    return SequenceData(offsets, items.reshape(-1), n_items, [f"u{u}" for u in range(n_users)],
                        [f"i{i}" for i in range(n_items)])


# --------------------------------------------------------------------------- SequenceData
def test_from_lists_layout():
    d = small_data()
    assert d.n_users == 3 and d.n_items == 6 and d.n_interactions == 10
    assert d.offsets.tolist() == [0, 5, 7, 10]
    assert d.offsets.dtype == np.int64 and d.items.dtype == np.int32 and d.timestamps.dtype == np.int64
    assert d.lengths.tolist() == [5, 2, 3]
    assert d.sequence(2).tolist() == [3, 1]
    assert d.sequence(3).tolist() == [2, 4, 6]
    with pytest.raises(DataError):
        d.sequence(0)
    with pytest.raises(DataError):
        d.sequence(4)
    d.validate()


def test_save_load_round_trip(tmp_path):
    d = small_data()
    d.item_domain = np.array([-1, 0, 0, 0, 1, 1, 1], dtype=np.int8)
    out = d.save(tmp_path / "ds", extra_meta={"source": "test"})
    assert sorted(p.name for p in out.iterdir()) == ["item_ids.json", "meta.json", "sequences.npz", "user_ids.json"]
    e = SequenceData.load(out)
    assert np.array_equal(e.offsets, d.offsets) and e.offsets.dtype == np.int64
    assert np.array_equal(e.items, d.items) and e.items.dtype == np.int32
    assert np.array_equal(e.timestamps, d.timestamps)
    assert e.item_domain.tolist() == [-1, 0, 0, 0, 1, 1, 1]
    assert e.user_ids == ["ua", "ub", "uc"]
    assert e.item_ids == ["i1", "i2", "i3", "i4", "i5", "i6"]
    assert e.n_items == 6
    assert e.meta["name"] == "small" and e.meta["notes"] == "hand-built" and e.meta["source"] == "test"
    assert e.meta["n_users"] == 3 and e.meta["n_interactions"] == 10
    assert e.meta["fingerprint"] == d.fingerprint() == e.fingerprint()
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp files left


def test_save_load_without_timestamps(tmp_path):
    d = small_data(with_ts=False)
    e = SequenceData.load(d.save(tmp_path / "nots"))
    assert e.timestamps is None and e.item_domain is None
    assert e.sequence(1).tolist() == [1, 2, 3, 4, 5]


def test_fingerprint_changes_with_content():
    a = small_data()
    b = SequenceData.from_lists([[1, 2, 3, 4, 5], [3, 1], [2, 4, 5]], 6, ["ua", "ub", "uc"],
                                [f"i{k}" for k in range(1, 7)])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == small_data(with_ts=False).fingerprint()  # timestamps are not part of it


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="meta.json"):
        SequenceData.load(tmp_path / "missing")
    out = small_data().save(tmp_path / "ds")
    (out / "user_ids.json").write_text("[1, 2,")
    with pytest.raises(DataError, match="user_ids.json"):
        SequenceData.load(out)
    out2 = small_data().save(tmp_path / "ds2")
    (out2 / "sequences.npz").unlink()
    with pytest.raises(DataError, match="sequences.npz"):
        SequenceData.load(out2)
    out3 = small_data().save(tmp_path / "ds3")
    (out3 / "item_ids.json").write_text(json.dumps(["only-one"]))
    with pytest.raises(DataError, match="id maps"):
        SequenceData.load(out3)


def test_validate_empty_sequence_user():
    d = SequenceData.from_lists([[1, 2], [], [3]], 3, ["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(DataError, match="'b'"):
        d.validate()


@pytest.mark.parametrize("seqs", [[[1, 7]], [[0, 2]], [[-1]]])
def test_validate_item_out_of_range(seqs):
    d = SequenceData.from_lists(seqs, 6, ["a"], [f"i{k}" for k in range(6)])
    with pytest.raises(DataError, match="out of range"):
        d.validate()


def test_validate_empty_data(tmp_path):
    d = SequenceData.from_lists([], 3, [], ["x", "y", "z"])
    with pytest.raises(DataError, match="no interactions"):
        d.validate("mysource")
    with pytest.raises(DataError):
        d.save(tmp_path / "empty")
    assert not (tmp_path / "empty" / "meta.json").exists()


def test_validate_timestamps_length():
    d = small_data()
    d.timestamps = d.timestamps[:-1]
    with pytest.raises(DataError, match="timestamps"):
        d.validate()


def test_idmap():
    m = IdMap()
    assert [m.add("x"), m.add("y"), m.add("x"), m.add(7), m.add("y")] == [1, 2, 1, 3, 2]
    assert len(m) == 3
    assert m.raw == ["x", "y", 7]
    assert m.get("y") == 2 and m.get("nope") is None


# --------------------------------------------------------------------------- splits
def test_leave_one_out():
    s = leave_one_out(small_data())
    assert s.kind == "loo"
    assert s.train_len.tolist() == [3, 2, 1]  # u2 has 2 items: all training
    assert s.valid.users.tolist() == [1, 3]
    assert s.valid.hist_len.tolist() == [3, 1]
    assert s.valid.targets.tolist() == [4, 4]
    assert s.test.users.tolist() == [1, 3]
    assert s.test.hist_len.tolist() == [4, 2]
    assert s.test.targets.tolist() == [5, 6]
    assert s.train_users.tolist() == [1, 2]  # u3 has a single training item
    sub = s.test.subset(np.array([False, True]))
    assert (sub.users.tolist(), sub.hist_len.tolist(), sub.targets.tolist()) == ([3], [2], [6])
    assert len(sub) == 1


def test_leave_one_out_nothing_to_evaluate():
    d = SequenceData.from_lists([[1, 2], [3]], 3, ["a", "b"], ["x", "y", "z"])
    with pytest.raises(DataError):
        leave_one_out(d)


def test_temporal_split():
    d = small_data()
    # all timestamps sorted: 5 10 15 20 25 30 35 40 50 60 -> q0.5 = 27.5, q0.8 = 42
    s = temporal_split(d, 0.5, 0.8)
    assert s.kind == "temporal"
    assert s.train_len.tolist() == [2, 2, 1]  # events before 27.5
    # u1: valid target = 3rd item (t=30), test target = 5th (t=50, first at/after 42)
    # u2: nothing after 27.5 -> neither; u3: valid = 4 (t=35), test = 6 (t=60)
    assert s.valid.users.tolist() == [1, 3]
    assert s.valid.hist_len.tolist() == [2, 1]
    assert s.valid.targets.tolist() == [3, 4]
    assert s.test.users.tolist() == [1, 3]
    assert s.test.hist_len.tolist() == [4, 2]
    assert s.test.targets.tolist() == [5, 6]


def test_temporal_split_valid_target_must_precede_test_cutoff():
    # u1's first event after the valid cut-off is already after the test cut-off
    d = SequenceData.from_lists([[1, 2, 3], [4, 5, 6, 7]], 7, ["a", "b"], list("abcdefg"),
                                [[1, 2, 100], [3, 4, 5, 6]])
    # sorted: 1 2 3 4 5 6 100; q(0.5)=4, q(0.9)=6+0.4*94=43.6
    s = temporal_split(d, 0.5, 0.9)
    assert s.valid.users.tolist() == [2]  # u1 has no event in [4, 43.6)
    assert s.valid.hist_len.tolist() == [1] and s.valid.targets.tolist() == [5]
    assert s.test.users.tolist() == [1]  # u2 has no event at/after 43.6
    assert s.test.hist_len.tolist() == [2] and s.test.targets.tolist() == [3]


def test_split_errors():
    with pytest.raises(DataError, match="timestamps"):
        temporal_split(small_data(with_ts=False))
    with pytest.raises(DataError):
        temporal_split(small_data(), 0.9, 0.5)
    with pytest.raises(DataError, match="unknown split"):
        make_split(small_data(), "random")
    assert make_split(small_data(), "temporal", 0.5, 0.8).valid.targets.tolist() == [3, 4]


def test_padded_prefixes():
    d = small_data()
    out = padded_prefixes(d, np.array([1, 2, 3]), np.array([5, 2, 3]), 4)
    assert out.tolist() == [[2, 3, 4, 5], [0, 0, 3, 1], [0, 2, 4, 6]]
    assert out.dtype == np.int64
    out = padded_prefixes(d, np.array([1, 2, 3]), np.array([3, 0, 1]), 3)
    assert out.tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 2]]
    out = padded_prefixes(d, np.array([3, 1]), np.array([2, 1]), 1)
    assert out.tolist() == [[4], [1]]


def test_prefix_positions():
    d = small_data()
    rows, pos = prefix_positions(d, np.array([3, 1]), np.array([2, 3]))
    assert rows.tolist() == [0, 0, 1, 1, 1]
    assert pos.tolist() == [7, 8, 0, 1, 2]


def test_history_mask():
    d = small_data()
    m = history_mask(d, np.array([1, 3]), np.array([3, 1]))
    assert m.shape == (2, 7) and m.dtype == torch.bool
    assert torch.nonzero(m[0]).flatten().tolist() == [0, 1, 2, 3]
    assert torch.nonzero(m[1]).flatten().tolist() == [0, 2]


def test_item_popularity():
    d = small_data()
    pop = item_popularity(d, np.array([3, 2, 1]))
    assert pop.tolist() == [0, 2, 2, 2, 0, 0, 0]
    assert item_popularity(d, d.lengths).tolist() == [0, 2, 2, 2, 2, 1, 1]


# --------------------------------------------------------------------------- training batches
def test_causal_dataset():
    s = leave_one_out(small_data())
    ds = CausalDataset(s, maxlen=3)
    assert len(ds) == 2
    assert ds.users.tolist() == [1, 2]
    b = ds.get_batch(torch.tensor([0, 1]))
    # u1 train prefix 1 2 3, u2 train prefix 3 1; rows of width maxlen + 1 = 4, and the
    # column that is padding in every row of the batch is trimmed away
    assert b["input"].tolist() == [[1, 2], [0, 3]]
    # the target is the next item at every real input position, 0 where the input is padding
    assert b["target"].tolist() == [[2, 3], [0, 1]]
    assert b["users"].tolist() == [1, 2]
    inp, tgt = ds[1]
    assert inp.tolist() == [0, 0, 3] and tgt.tolist() == [0, 0, 1]


def test_causal_dataset_truncates_to_maxlen():
    d = SequenceData.from_lists([[1, 2, 3, 4, 5, 6, 7, 8]], 8, ["a"], list("abcdefgh"))
    ds = CausalDataset(leave_one_out(d), maxlen=3)  # train prefix 1..6, last 4 kept
    b = ds.get_batch(torch.tensor([0]))
    assert b["input"].tolist() == [[3, 4, 5]]
    assert b["target"].tolist() == [[4, 5, 6]]
    # input and target are the same sequence shifted by one wherever both are real
    real = b["input"][:, 1:] > 0
    assert torch.equal(b["input"][:, 1:][real], b["target"][:, :-1][real])


def test_repeated_padding_fills_the_padding_with_copies_of_the_row():
    rows = torch.tensor([[0, 0, 0, 0, 0, 1, 2, 3],  # 3 items: pairs (1,2) (2,3); width 7 -> 1..3 more copies
                         [0, 0, 0, 0, 0, 0, 0, 9],  # 1 item: no pair, nothing to repeat
                         [4, 5, 6, 7, 8, 9, 10, 11]])  # 7 pairs: 7 // 7 = 1 -> no room for a copy
    plain = {1: ([1, 2, 1, 2], [2, 3, 2, 3]), 2: ([1, 2, 1, 2, 1, 2], [2, 3, 2, 3, 2, 3]),
             3: ([2, 1, 2, 1, 2, 1, 2], [3, 2, 3, 2, 3, 2, 3])}  # 8 pairs cut to the last 7
    # delimited: 2 and 3 copies both fill the 7 places ([2, 0, 1, 2, 0, 1, 2]), so two outcomes
    delimited = {1: ([1, 2, 0, 1, 2], [2, 3, 0, 2, 3]), 2: ([2, 0, 1, 2, 0, 1, 2], [3, 0, 2, 3, 0, 2, 3])}
    for delim, expected in ((False, plain), (True, delimited)):
        g = torch.Generator().manual_seed(0)
        seen = set()
        for _ in range(200):
            inputs, target = repeated_padding(rows, 7, delim, g)
            assert inputs.shape == target.shape and inputs.shape[1] == 7  # row 3 fills the window
            got = (inputs[0].tolist(), target[0].tolist())
            k = next(k for k, (i, t) in expected.items() if got == ([0] * (7 - len(i)) + i, [0] * (7 - len(t)) + t))
            seen.add(k)
            assert inputs[1].eq(0).all() and target[1].eq(0).all()
            assert inputs[2].tolist() == list(range(4, 11)) and target[2].tolist() == list(range(5, 12))
        assert seen == set(expected)  # every copy count in 1..width // pairs is drawn


def test_repeated_padding_batches_keep_the_row_at_the_right_end():
    d = uniform_data(60, 12, 40, seed=3)
    split = leave_one_out(d)
    base = CausalDataset(split, maxlen=20)
    rep = CausalDataset(split, maxlen=20, repeat_padding="plain")
    index = torch.arange(60)
    b, r = base.get_batch(index), rep.get_batch(index, torch.Generator().manual_seed(1))
    width = b["input"].shape[1]
    # the real copy sits where the unpadded row did, so the scoring position trains as before
    assert torch.equal(r["input"][:, -width:][b["input"] > 0], b["input"][b["input"] > 0])
    assert torch.equal(r["target"][:, -width:][b["target"] > 0], b["target"][b["target"] > 0])
    assert (r["target"] > 0).sum() > 2 * (b["target"] > 0).sum()  # copies add targets
    with pytest.raises(ValueError, match="prefix rows"):
        CausalDataset(split, maxlen=20, prefixes=True, repeat_padding="plain")


def test_cloze_mask_rate_close_to_mask_prob():
    d = uniform_data(5000, 52, 80, seed=1)  # loo -> train prefix of exactly 50
    ds = ClozeDataset(leave_one_out(d), maxlen=50, mask_prob=0.2)
    assert ds.mask_token == 81
    b = ds.get_batch(torch.arange(len(ds)), torch.Generator().manual_seed(0))
    masked = b["input"] == ds.mask_token
    assert (ds.rows > 0).all()
    rate = masked.float().mean().item()
    assert abs(rate - 0.2) < 0.02, rate


def test_cloze_masks_real_positions_only_and_every_row():
    rng = np.random.default_rng(2)
    lengths = rng.integers(4, 30, 800)  # train prefixes of 2..27 in rows of width 20: lots of padding
    seqs = [list(rng.permutation(40)[:n] + 1) for n in lengths]
    d = SequenceData.from_lists(seqs, 40, [f"u{i}" for i in range(800)], [f"i{i}" for i in range(40)])
    ds = ClozeDataset(leave_one_out(d), maxlen=20, mask_prob=0.15)
    rows = ds.rows
    assert (rows == 0).any()
    b = ds.get_batch(torch.arange(len(ds)), torch.Generator().manual_seed(4))
    inp, tgt = b["input"], b["target"]
    masked = inp == ds.mask_token
    assert masked.any(dim=1).all()  # every row trains
    assert not (masked & (rows == 0)).any()  # padding is never masked
    assert torch.equal(inp[rows == 0], rows[rows == 0])
    assert torch.equal(tgt[masked], rows[masked])  # targets are the original items at masks
    assert (tgt[~masked] == 0).all()  # and nothing elsewhere
    assert torch.equal(inp[~masked], rows[~masked])  # unmasked inputs unchanged
    # deterministic for a seeded generator
    b2 = ds.get_batch(torch.arange(len(ds)), torch.Generator().manual_seed(4))
    assert torch.equal(b2["input"], inp)
    # a row of length 2 with a tiny rate still gets (its last item) masked
    d2 = SequenceData.from_lists([[5, 6, 7, 8]], 8, ["a"], list("abcdefgh"))
    ds2 = ClozeDataset(leave_one_out(d2), maxlen=4, mask_prob=1e-9)
    b2 = ds2.get_batch(torch.tensor([0]), torch.Generator().manual_seed(0))
    assert b2["input"].tolist() == [[5, 9]]  # all-padding columns trimmed
    assert b2["target"].tolist() == [[0, 6]]
    # last_mask_prob: that share of rows is masked at the last item only, like the scoring input
    only = ClozeDataset(leave_one_out(d), maxlen=20, mask_prob=0.5, last_mask_prob=1.0)
    b3 = only.get_batch(torch.arange(len(only)), torch.Generator().manual_seed(4))
    m3 = b3["input"] == only.mask_token
    assert m3.sum(1).eq(1).all() and m3[:, -1].all()
    half = ClozeDataset(leave_one_out(d), maxlen=20, mask_prob=0.5, last_mask_prob=0.3)
    m4 = half.get_batch(torch.arange(len(half)), torch.Generator().manual_seed(4))["input"] == half.mask_token
    share = (m4.sum(1).eq(1) & m4[:, -1]).float().mean().item()
    assert 0.25 < share < 0.45, share  # 30% forced, plus rows that drew only their last item


def test_random_prefixes_cut_right_aligned_and_uniform():
    rows = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 0, 5], [7, 8, 9, 10, 11, 12]])
    seen: dict[int, set] = {0: set(), 1: set(), 2: set()}
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        out = random_prefixes(rows, 1.0, g)
        for r in range(3):
            kept = [x for x in out[r].tolist() if x]
            real = [x for x in rows[r].tolist() if x]
            assert kept == real[:len(kept)]  # a prefix of the row
            assert out[r, -1] != 0  # still right-aligned: the last column is its last item
            seen[r].add(len(kept))
    assert seen == {0: {2, 3, 4}, 1: {1}, 2: {2, 3, 4, 5, 6}}  # every length in [2, n]; rows of 1 stay
    assert torch.equal(random_prefixes(rows, 0.0, g), rows)
    half = torch.stack([random_prefixes(rows[2:], 0.5, g)[0] for _ in range(400)])
    share = (half != rows[2]).any(1).float().mean().item()
    assert 0.32 < share < 0.48, share  # half cut, of which 1 in 5 draws the whole row


def test_cloze_prefix_prob_cuts_rows_and_is_off_by_default():
    d = SequenceData.from_lists([list(range(1, 11))] * 40, 10, [str(u) for u in range(40)], [str(i) for i in range(10)])
    split = leave_one_out(d)
    plain = ClozeDataset(split, maxlen=20, mask_prob=0.3)
    cut = ClozeDataset(split, maxlen=20, mask_prob=0.3, prefix_prob=1.0)
    index = torch.arange(40)
    a = plain.get_batch(index, torch.Generator().manual_seed(1))
    b = ClozeDataset(split, maxlen=20, mask_prob=0.3, prefix_prob=0.0).get_batch(index, torch.Generator().manual_seed(1))
    assert torch.equal(a["input"], b["input"])  # prefix_prob 0 draws nothing: the old stream
    c = cut.get_batch(index, torch.Generator().manual_seed(1))
    lengths = (c["input"] > 0).sum(1)
    assert lengths.min() >= 2 and lengths.max() <= 8 and len(set(lengths.tolist())) > 3
    restored = torch.where(c["target"] > 0, c["target"], c["input"])
    for row, n in zip(restored, lengths.tolist()):
        assert row[-n:].tolist() == list(range(1, n + 1))  # the row's first n items, right-aligned


def test_cloze_end_mask_prob_masks_the_last_item_on_top_of_the_rate():
    d = SequenceData.from_lists([list(range(1, 11))] * 400, 10, [str(u) for u in range(400)], [str(i) for i in range(10)])
    split = leave_one_out(d)
    index = torch.arange(400)
    always = ClozeDataset(split, maxlen=20, mask_prob=0.2, end_mask_prob=1.0).get_batch(index, torch.Generator().manual_seed(2))
    masked = always["target"] > 0
    assert masked[:, -1].all()  # every row's last item is a target
    assert 0.15 < masked[:, :-1].float().mean().item() < 0.25  # the others keep the plain rate
    half = ClozeDataset(split, maxlen=20, mask_prob=0.2, end_mask_prob=0.5).get_batch(index, torch.Generator().manual_seed(2))
    share = (half["target"][:, -1] > 0).float().mean().item()
    assert 0.52 < share < 0.68, share  # 0.2 + 0.8 x 0.5 = 0.6


def test_sample_train_negatives_never_in_row():
    g = torch.Generator().manual_seed(0)
    n_items = 12
    seqs = torch.randint(0, n_items + 1, (500, 9), generator=g)  # 0 = padding, repeats allowed
    negs = sample_train_negatives(seqs, n_items, (9,), generator=torch.Generator().manual_seed(1))
    assert negs.shape == (500, 9)
    assert ((negs >= 1) & (negs <= n_items)).all()
    clash = (negs.unsqueeze(2) == seqs.unsqueeze(1)).any(dim=2)
    assert not clash.any()
    # a row that holds every item but one can only draw that one
    full = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 0]])
    out = sample_train_negatives(full, n_items, (3, 2), generator=torch.Generator().manual_seed(2))
    assert out.shape == (1, 3, 2)
    assert (out == 11).all()


def test_sample_train_negatives_exhausted_catalog():
    full = torch.tensor([[1, 2, 3]])
    with pytest.raises(RuntimeError):
        sample_train_negatives(full, 3, (2,), generator=torch.Generator().manual_seed(0), max_rounds=5)


# --------------------------------------------------------------------------- synthetic data
SPEC = SyntheticSpec(n_users=25, n_items_per_domain=30, n_clusters=3, min_len=4, max_len=12, seed=7)


def test_synthetic_deterministic_and_valid():
    a, side_a = generate(SPEC)
    b, side_b = generate(SPEC)
    assert set(a) == {"merged", "A", "B"}
    for key in a:
        assert np.array_equal(a[key].offsets, b[key].offsets)
        assert np.array_equal(a[key].items, b[key].items)
        assert np.array_equal(a[key].timestamps, b[key].timestamps)
        a[key].validate(key)
    assert side_a == side_b
    c, _ = generate(SyntheticSpec(n_users=25, n_items_per_domain=30, n_clusters=3, min_len=4, max_len=12, seed=8))
    assert not np.array_equal(a["A"].items, c["A"].items) or not np.array_equal(a["A"].offsets, c["A"].offsets)


def test_synthetic_structure():
    data, side = generate(SPEC)
    merged, dom_a, dom_b = data["merged"], data["A"], data["B"]
    n = SPEC.n_items_per_domain
    assert dom_a.n_items == n and dom_b.n_items == n and merged.n_items == 2 * n
    assert merged.n_users == dom_a.n_users == dom_b.n_users == SPEC.n_users
    assert merged.item_domain.tolist() == [-1] + [0] * n + [1] * n
    assert len(side) == 2 * n and side["A0"]["domain"] == "A"
    for u in range(1, SPEC.n_users + 1):
        sa, sb = dom_a.sequence(u), dom_b.sequence(u)
        assert SPEC.min_len <= len(sa) <= SPEC.max_len
        assert len(set(sa.tolist())) == len(sa)  # no repeated item within a domain
        assert len(set(sb.tolist())) == len(sb)
        m = merged.sequence(u)
        assert len(m) == len(sa) + len(sb)
        ts = merged.timestamps[merged.offsets[u - 1]: merged.offsets[u]]
        assert np.all(np.diff(ts) > 0)  # merged sequences are time-ordered
        # the merged sequence restricted to a domain is that domain's sequence
        assert (m[m <= n]).tolist() == sa.tolist()
        assert (m[m > n] - n).tolist() == sb.tolist()
        for d in (dom_a, dom_b):
            assert np.all(np.diff(d.timestamps[d.offsets[u - 1]: d.offsets[u]]) > 0)

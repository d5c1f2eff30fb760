"""core.metrics against hand-computed values and sklearn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from core.metrics import MetricAccumulator, list_metrics, ndcg_by_id, rank_metrics, ranks_from_scores, sample_negatives, \
    paired_over_seeds, ratio_over_seeds, seed_averaged_paired, shared_seeds, summarize


def vals(t):
    return [float(x) for x in t]


# --------------------------------------------------------------------------- rank_metrics
def test_rank_metrics_hand_computed():
    m = rank_metrics(torch.tensor([0, 1, 4, 12]), [1, 5, 10])
    assert vals(m["HR@1"]) == [1.0, 0.0, 0.0, 0.0]
    assert vals(m["HR@5"]) == [1.0, 1.0, 1.0, 0.0]
    assert vals(m["HR@10"]) == [1.0, 1.0, 1.0, 0.0]
    assert vals(m["Recall@5"]) == vals(m["HR@5"])
    assert vals(m["NDCG@1"]) == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert vals(m["NDCG@5"]) == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0])
    assert vals(m["NDCG@10"]) == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0])
    assert vals(m["Precision@5"]) == pytest.approx([0.2, 0.2, 0.2, 0.0])
    assert vals(m["Precision@1"]) == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert vals(m["MRR"]) == pytest.approx([1.0, 0.5, 0.2, 1 / 13])
    # means of the batch, as reported
    assert float(m["NDCG@5"].mean()) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert float(m["MRR"].mean()) == pytest.approx((1 + 0.5 + 0.2 + 1 / 13) / 4)


def test_rank_metrics_accepts_numpy_and_boundary():
    m = rank_metrics(np.array([9, 10]), [10])
    assert vals(m["HR@10"]) == [1.0, 0.0]  # rank 9 (0-based) is the 10th place: inside top 10
    assert vals(m["NDCG@10"]) == pytest.approx([1 / math.log2(11), 0.0])


# --------------------------------------------------------------------------- ranks_from_scores
def test_ranks_from_scores_basic():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.1, 0.7],
                           [0.0, 0.5, 0.9, 0.1, 0.7]])
    targets = torch.tensor([4, 3])
    # row 0: item 4 (0.7) is below only item 2 (0.9) -> rank 1
    # row 1: item 3 (0.1) is below 0.5, 0.9, 0.7 -> rank 3 (column 0 with 0.0 is below it)
    assert ranks_from_scores(scores, targets).tolist() == [1, 3]


def test_ranks_from_scores_history_exclusion():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.1, 0.7]])
    targets = torch.tensor([3])
    exclude = torch.tensor([[True, False, True, False, False]])  # item 2 in history
    assert ranks_from_scores(scores, targets, exclude).tolist() == [2]  # only 0.5 and 0.7 ahead


def test_ranks_from_scores_pessimistic_ties():
    # a constant model gets the worst rank among the non-excluded items
    scores = torch.ones(2, 6)
    targets = torch.tensor([2, 5])
    assert ranks_from_scores(scores, targets).tolist() == [5, 5]
    exclude = torch.zeros(2, 6, dtype=torch.bool)
    exclude[:, 0] = True  # padding
    exclude[0, 1] = True  # history of row 0
    exclude[1, [1, 3, 4]] = True  # history of row 1
    # row 0: columns 3, 4, 5 remain besides the target -> rank 3; row 1: columns 2 remains -> 1
    assert ranks_from_scores(scores, targets, exclude).tolist() == [3, 1]
    # a partial tie: one item strictly above, two equal to the target
    s = torch.tensor([[0.0, 2.0, 1.0, 1.0, 1.0, 0.5]])
    assert ranks_from_scores(s, torch.tensor([3])).tolist() == [3]


def test_ranks_from_scores_target_never_excluded():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.1, 0.7]])
    exclude = torch.tensor([[True, False, False, True, False]])  # the target itself flagged
    assert ranks_from_scores(scores, torch.tensor([3]), exclude).tolist() == [3]
    exclude_all = torch.ones(1, 5, dtype=torch.bool)
    assert ranks_from_scores(scores, torch.tensor([3]), exclude_all).tolist() == [0]


def test_ranks_from_scores_does_not_modify_inputs():
    scores = torch.tensor([[0.0, 0.5, 0.25]])
    exclude = torch.tensor([[True, False, False]])
    ranks_from_scores(scores, torch.tensor([1]), exclude)
    assert exclude.tolist() == [[True, False, False]]
    assert scores.tolist() == [[0.0, 0.5, 0.25]]


# --------------------------------------------------------------------------- list_metrics
def test_list_metrics_hand_computed():
    hits = torch.tensor([
        [1, 0, 1, 0, 0],  # 2 of 3 relevant found, at places 1 and 3
        [0, 0, 0, 0, 1],  # 1 relevant, found at place 5
        [0, 0, 0, 0, 0],  # miss
        [1, 1, 1, 1, 1],  # 8 relevant, all 5 slots hit
    ])
    n_rel = torch.tensor([3, 1, 2, 8])
    m = list_metrics(hits, n_rel, [3, 5])
    l2 = math.log2
    # Recall
    assert vals(m["Recall@3"]) == pytest.approx([2 / 3, 0.0, 0.0, 3 / 8])
    assert vals(m["Recall@5"]) == pytest.approx([2 / 3, 1.0, 0.0, 5 / 8])
    # Precision
    assert vals(m["Precision@3"]) == pytest.approx([2 / 3, 0.0, 0.0, 1.0])
    assert vals(m["Precision@5"]) == pytest.approx([2 / 5, 1 / 5, 0.0, 1.0])
    # HR
    assert vals(m["HR@3"]) == [1.0, 0.0, 0.0, 1.0]
    assert vals(m["HR@5"]) == [1.0, 1.0, 0.0, 1.0]
    # NDCG: IDCG over min(n_rel, K) ideal hits
    dcg0 = 1 / l2(2) + 1 / l2(4)
    idcg0_3 = 1 / l2(2) + 1 / l2(3) + 1 / l2(4)
    assert vals(m["NDCG@3"]) == pytest.approx([dcg0 / idcg0_3, 0.0, 0.0, 1.0])
    ndcg1_5 = (1 / l2(6)) / 1.0
    assert vals(m["NDCG@5"]) == pytest.approx([dcg0 / idcg0_3, ndcg1_5, 0.0, 1.0])
    # MRR: first hit anywhere in the list
    assert vals(m["MRR"]) == pytest.approx([1.0, 0.2, 0.0, 1.0])


def test_list_metrics_shorter_than_k():
    hits = torch.tensor([[0, 1], [1, 1]])
    n_rel = torch.tensor([1, 4])
    m = list_metrics(hits, n_rel, [5])
    assert vals(m["Precision@5"]) == pytest.approx([1 / 5, 2 / 5])  # missing slots count as misses
    assert vals(m["Recall@5"]) == pytest.approx([1.0, 0.5])
    idcg1 = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)
    assert vals(m["NDCG@5"]) == pytest.approx([1 / math.log2(3), (1 + 1 / math.log2(3)) / idcg1])
    assert vals(m["MRR"]) == pytest.approx([0.5, 1.0])


def test_list_metrics_no_relevant_items_is_zero_not_nan():
    m = list_metrics(torch.zeros(1, 3), torch.tensor([0]), [2])
    for name in ("HR@2", "Recall@2", "NDCG@2", "Precision@2", "MRR"):
        assert vals(m[name]) == [0.0], name


def test_list_metrics_shape_check():
    with pytest.raises(ValueError):
        list_metrics(torch.zeros(3), torch.tensor([1, 1, 1]), [1])
    with pytest.raises(ValueError):
        list_metrics(torch.zeros(3, 2), torch.tensor([1, 1]), [1])


def test_list_metrics_ndcg_matches_sklearn():
    rng = np.random.default_rng(0)
    for case in range(20):
        n_items = int(rng.integers(8, 40))
        k = int(rng.integers(1, 12))
        y_true = (rng.random(n_items) < 0.3).astype(float)
        if y_true.sum() == 0:
            y_true[rng.integers(n_items)] = 1.0
        y_score = rng.permutation(n_items).astype(float)  # distinct scores: no tie ambiguity
        ranked = np.argsort(-y_score)
        hits = y_true[ranked][None, :]
        ours = float(list_metrics(hits, np.array([y_true.sum()]), [k])[f"NDCG@{k}"][0])
        ref = ndcg_score(y_true[None, :], y_score[None, :], k=k)
        assert ours == pytest.approx(ref, abs=1e-9), (case, k)
        # the ranked list truncated at K gives the same value (K-long lists)
        ours_trunc = float(list_metrics(hits[:, :k], np.array([y_true.sum()]), [k])[f"NDCG@{k}"][0])
        assert ours_trunc == pytest.approx(ref, abs=1e-9)


def test_single_target_list_metrics_match_rank_metrics():
    ranks = torch.tensor([0, 3, 7, 9])
    hits = torch.zeros(4, 10)
    hits[torch.arange(4), ranks] = 1
    a = list_metrics(hits, torch.ones(4), [1, 5, 10])
    b = rank_metrics(ranks, [1, 5, 10])
    for name in b:
        assert vals(a[name]) == pytest.approx(vals(b[name])), name


# --------------------------------------------------------------------------- sample_negatives
def test_sample_negatives_respects_exclusion_and_is_distinct():
    n_items, num = 30, 8
    g = torch.Generator().manual_seed(1)
    exclude = torch.rand(64, n_items + 1, generator=g) < 0.4
    assert int((~exclude[:, 1:]).sum(1).min()) >= num
    exclude[:, 0] = False  # even if column 0 is not flagged, padding is never drawn
    negs = sample_negatives(exclude, n_items, num, torch.Generator().manual_seed(5))
    assert negs.shape == (64, num)
    for row, ex in zip(negs.tolist(), exclude):
        assert len(set(row)) == num
        assert all(1 <= i <= n_items for i in row)
        assert not any(bool(ex[i]) for i in row)


def test_sample_negatives_exhausts_exactly_the_available_items():
    exclude = torch.zeros(1, 6, dtype=torch.bool)
    exclude[0, [0, 2]] = True
    negs = sample_negatives(exclude, 5, 4, torch.Generator().manual_seed(0))
    assert sorted(negs[0].tolist()) == [1, 3, 4, 5]
    with pytest.raises(ValueError):
        sample_negatives(exclude, 5, 5, torch.Generator().manual_seed(0))


def test_sample_negatives_deterministic():
    exclude = torch.zeros(8, 101, dtype=torch.bool)
    exclude[:, :10] = True
    a = sample_negatives(exclude, 100, 20, torch.Generator().manual_seed(42))
    b = sample_negatives(exclude, 100, 20, torch.Generator().manual_seed(42))
    c = sample_negatives(exclude, 100, 20, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_negatives_popularity_weights():
    n_items = 20
    pop = torch.ones(n_items + 1)
    pop[1:5] = 50.0  # items 1..4 are 50x as popular
    pop[0] = 0.0
    exclude = torch.zeros(4000, n_items + 1, dtype=torch.bool)
    exclude[:, 7] = True
    negs = sample_negatives(exclude, n_items, 2, torch.Generator().manual_seed(3), popularity=pop)
    counts = torch.bincount(negs.flatten(), minlength=n_items + 1)
    assert counts[0] == 0 and counts[7] == 0
    popular = counts[1:5].float().mean()
    rare = counts[torch.tensor([5, 6] + list(range(8, 21)))].float().mean()
    assert popular > 8 * rare
    # uniform without weights: no such skew
    negs_u = sample_negatives(exclude, n_items, 2, torch.Generator().manual_seed(3))
    cu = torch.bincount(negs_u.flatten(), minlength=n_items + 1).float()
    assert cu[1:5].mean() < 1.5 * cu[8:].mean()


# --------------------------------------------------------------------------- accumulator
def test_metric_accumulator_weights_users_not_batches():
    acc = MetricAccumulator()
    assert acc.result() == {}
    acc.add({"HR@10": torch.tensor([1.0, 0.0, 1.0]), "MRR": torch.tensor([1.0, 0.25, 0.5])})
    acc.add({"HR@10": torch.tensor([0.0]), "MRR": torch.tensor([0.125])})
    res = acc.result()
    assert acc.count == 4
    assert res["HR@10"] == pytest.approx(2 / 4)  # not the mean of batch means (1/3)
    assert res["MRR"] == pytest.approx((1 + 0.25 + 0.5 + 0.125) / 4)
    acc.all_reduce()  # not distributed: a no-op
    assert acc.result() == res


def test_accumulator_with_rank_metrics_and_summary():
    acc = MetricAccumulator()
    acc.add(rank_metrics(torch.tensor([0, 20]), [10]))
    acc.add(rank_metrics(torch.tensor([1]), [10]))
    res = acc.result()
    assert res["HR@10"] == pytest.approx(2 / 3)
    assert res["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert summarize(res, ks=(10,)) == f"HR@10 {2 / 3:.4f}  NDCG@10 {(1 + 1 / math.log2(3)) / 3:.4f}"


def test_evaluator_metrics_do_not_depend_on_batching():
    """Token-budgeted batches, fixed chunks and one big batch give the same metrics and ranks."""
    import numpy as np

    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out
    from core.evaluation import Evaluator

    rng = np.random.default_rng(0)
    seqs = [list(rng.permutation(60)[: int(n)] + 1) for n in rng.integers(3, 40, 300)]
    data = SequenceData.from_lists(seqs, 60, list(range(300)), list(range(60)))
    split = leave_one_out(data)
    weights = torch.randn(61, 8, generator=torch.Generator().manual_seed(1))
    weights[0] = 0  # padding contributes nothing, as in the models

    def score(inputs, users):  # depends on the whole (trimmed) history, so batching bugs would show
        return (weights[inputs].sum(1)) @ weights.T

    runs = []
    for batch_size, budget in ((1024, 1 << 20), (1024, 64), (7, 1 << 16)):
        ev = Evaluator(split, "test", 30, sampled=(20,), batch_size=batch_size, token_budget=budget)
        runs.append((ev.run(score), ev.last_ranks))
        assert len(ev.last_ranks[0]) == len(split.test)
    for metrics, (users, ranks) in runs[1:]:
        assert metrics == pytest.approx(runs[0][0], abs=1e-12)
        order, order0 = np.argsort(users), np.argsort(runs[0][1][0])
        assert np.array_equal(ranks[order], runs[0][1][1][order0])


# --------------------------------------------------------------------------- paired comparisons
def test_ndcg_by_id_hand_computed():
    out = ndcg_by_id(np.array([7, 3, 9]), np.array([0, 2, 10]), k=10)
    assert list(out) == [7, 3, 9]  # plain ints, the given order
    assert out[7] == pytest.approx(1.0) and out[3] == pytest.approx(1 / math.log2(4)) and out[9] == 0.0


def test_seed_averaged_paired_averages_over_seeds_on_the_shared_ids():
    pytest.importorskip("scipy")
    from scipy import stats

    # two seeds per model; id 99 is scored by one run only and leaves the comparison
    base = [{1: 0.0, 2: 0.5, 3: 0.2, 4: 0.1, 99: 1.0}, {1: 0.2, 2: 0.3, 3: 0.2, 4: 0.3}]
    other = [{1: 1.0, 2: 0.5, 3: 0.6, 4: 0.2}, {1: 0.6, 2: 0.7, 3: 0.4, 4: 0.2}]
    t = seed_averaged_paired(base, other)
    x, y = np.array([0.1, 0.4, 0.2, 0.2]), np.array([0.8, 0.6, 0.5, 0.2])  # per-id means over the seeds
    assert t["users"] == 4 and t["mean_diff"] == pytest.approx(float((y - x).mean()))
    assert t["wilcoxon_p"] == pytest.approx(stats.wilcoxon(y, x, zero_method="wilcox").pvalue)
    assert t["t_p"] == pytest.approx(stats.ttest_rel(y, x).pvalue)
    same = seed_averaged_paired(base[1:], base[1:])
    assert same["mean_diff"] == 0.0 and same["wilcoxon_p"] == 1.0 and same["t_p"] == 1.0


def test_shared_seeds_and_ratio_over_them():
    # seed 3 only in base, seed 4's other value missing: seeds 1 and 2 are compared
    base, other = {1: 0.2, 2: 0.4, 3: 9.0, 4: 0.1}, {1: 0.3, 2: 0.3, 4: None}
    assert shared_seeds(base, other) == [1, 2] and shared_seeds(base) == [1, 2, 3, 4]
    ratio, seeds, per_seed = ratio_over_seeds(base, other)
    assert seeds == [1, 2] and ratio == pytest.approx(0.3 / 0.3) and per_seed == pytest.approx([1.5, 0.75])
    assert ratio_over_seeds({1: 1.0}, {2: 1.0}) is None


def test_paired_over_seeds_uses_the_shared_seeds_only():
    pytest.importorskip("scipy")
    # seed 2 lacks the other model's file (None), seed 3 lacks the base: only seed 1 is paired
    base = {1: {10: 0.0, 11: 0.5, 12: 0.25}, 2: {10: 1.0}, 3: None}
    other = {1: {10: 1.0, 11: 0.5, 12: 0.75}, 2: None, 3: {10: 0.0}}
    t = paired_over_seeds(base, other)
    assert t["seeds"] == [1] and t["users"] == 3
    assert t["mean_diff"] == pytest.approx(0.5) and t["per_seed_diff"] == pytest.approx([0.5])
    assert paired_over_seeds({1: None}, {1: {10: 1.0}}) == {}

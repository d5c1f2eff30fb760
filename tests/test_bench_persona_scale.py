"""What benchmarks/persona.py's summary now takes from persona_training.evaluate: ``summary_rows``
(the pooled folds of ``user_ranks`` records as result rows, checked against ``pool_folds`` and
``bootstrap_summary``) and ``goal_verdict`` (trained beats zero-shot and random on NDCG@10)."""
from __future__ import annotations

import numpy as np
import pytest

from persona_training.evaluate import METRICS, bootstrap_summary, goal_verdict, pool_folds, summary_rows

HEAD = ["dataset", "model", "protocol", "metric", "value", "std", "seeds", "device", "command"]


def _record(model, seed, fold, users, ranks, device="cpu A"):
    return {"dataset": "amazon", "model": model, "protocol": "sampled-100", "metric": "user_ranks", "seeds": [seed],
            "fold": fold, "users": users, "ranks": ranks, "device": device, "command": f"run --fold {fold}"}


def test_summary_rows_are_the_pooled_folds_and_bootstrap_intervals():
    records = [_record("trained", 1, 0, ["a", "b"], [0, 3]), _record("trained", 1, 1, ["c"], [None]),
               _record("trained", 2, 0, ["a", "b"], [1, 0], device="cpu B"), _record("trained", 2, 1, ["c"], [7]),
               _record("random", 1, 0, ["a", "b"], [5, 20]), _record("random", 1, 1, ["c"], [9])]
    rows, pooled = summary_rows(records, resamples=300, seed=4, command=lambda d: f"{len(d['seeds'])} seed(s)")
    assert pooled.keys() == pool_folds(records).keys()
    users, stats, diffs = bootstrap_summary(pooled, 300, 4)
    assert len(rows) == 2 * len(METRICS) + 1  # random and trained; one pair of PAIRS present
    by = {(r["model"], r["metric"]): r for r in rows}
    for model in ("random", "trained"):
        for m in METRICS:
            r, s = by[(model, m)], stats[model][m]
            assert list(r)[:len(HEAD)] == HEAD and r["dataset"] == "amazon" and r["protocol"] == "sampled-100"
            got = (r["value"], r["ci_low"], r["ci_high"], r["se_users"])
            assert got == (s["mean"], s["ci_low"], s["ci_high"], s["se"])
            assert r["users"] == 3 and r["folds"] == [0, 1] and r["bootstrap"] == 300
            seed_means = pooled[model]["seed_means"][m]
            assert r["std"] == (pytest.approx(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0)
    assert by[("trained", "MRR")]["device"] == "cpu A; cpu B" and by[("trained", "MRR")]["command"] == "2 seed(s)"
    assert by[("random", "MRR")]["seeds"] == [1] and by[("random", "MRR")]["std"] == 0.0
    diff, t = by[("trained", "NDCG@10_minus_random")], diffs[("trained", "random")]
    assert (diff["value"], diff["ci_low"], diff["p_boot"], diff["command"]) == (t["mean"], t["ci_low"], t["p_boot"],
                                                                                "summarize")
    assert summary_rows([], resamples=10) == ([], {})


def _by(ndcg: dict, intervals: dict) -> dict:
    """``goal_verdict``'s input: NDCG@10 rows per model and paired-difference rows per (a, b) interval."""
    return {(m, "NDCG@10"): {"value": v} for m, v in ndcg.items()} | {
        (a, f"NDCG@10_minus_{b}"): {"ci_low": low, "ci_high": high} for (a, b), (low, high) in intervals.items()}


def test_goal_verdict_reads_the_point_estimates_and_the_paired_intervals():
    ndcg = {"trained": 0.5, "zero-shot": 0.3, "random": 0.1}
    sure = _by(ndcg, {("trained", "zero-shot"): (0.1, 0.3), ("trained", "random"): (0.3, 0.5),
                      ("zero-shot", "random"): (-0.1, 0.4)})
    assert goal_verdict("amazon", sure) == ("amazon: trained 0.500, zero-shot 0.300, random 0.100: met "
                                            "(both paired differences' 95% intervals exclude 0)")
    planted = goal_verdict("synthetic", sure, planted=True)
    assert planted.endswith("; zero-shot > random: yes (interval [-0.100, 0.400])")
    unsure = _by(ndcg, {("trained", "zero-shot"): (-0.1, 0.3), ("trained", "random"): (0.3, 0.5)})
    assert goal_verdict("yelp", unsure).endswith(": met on the point estimates only (a paired difference's 95% "
                                                 "interval includes 0)")
    assert goal_verdict("yelp", _by({**ndcg, "trained": 0.2}, {})) == ("yelp: trained 0.200, zero-shot 0.300, "
                                                                      "random 0.100: NOT met")
    assert goal_verdict("synthetic", _by({**ndcg, "zero-shot": 0.05}, {}), planted=True).endswith(
        "; zero-shot > random: no")
    assert goal_verdict("yelp", _by({"trained": 0.5, "zero-shot": 0.3}, {})) == "yelp: incomplete"

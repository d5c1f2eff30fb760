"""The evaluation protocol that benchmarks/cross_domain.py and benchmarks/universal.py drive: the
cold-start goal of issues 8 and 23 and its verdict text, the seed-averaged test over the seeds two
models both ran, issue 9's goal against the baselines and a feature ablation's per-seed effect; and
the cross-domain summary's fallback to the largest per-seed p when the runs' ranks are gone."""
from __future__ import annotations

import numpy as np
import pytest

from cross_domain.evaluate import cold_start_goal, goal_text, seed_averaged_runs, seed_averaged_test, \
    transfer_verdict
from universal.evaluate import seed_differences, versus_baselines


def test_cold_start_goal_on_cold_and_warm_users():
    assert cold_start_goal("cold", 0.06, 0.01)
    assert not cold_start_goal("cold", 0.05, 0.01)  # the gain must exceed +5%
    assert not cold_start_goal("leak-controlled", 0.2, 0.05)  # and be significant
    assert not cold_start_goal("cold", 0.2, None)  # no test: not shown
    assert cold_start_goal("warm", -0.1, 0.2) and cold_start_goal("warm", -0.1, None)  # worse, not significantly
    assert cold_start_goal("warm", 0.0, 0.001) and not cold_start_goal("warm", -0.01, 0.001)
    assert goal_text("cold", 0.187, 4.3e-179, over="ensemble") == "cold +18.7% over ensemble (p=4.3e-179) met"
    assert goal_text("warm", -0.02, 0.01) == "warm -2.0% (p=0.01) HURT"
    assert goal_text("cold", 0.1, None) == "cold +10.0% MISSED"


def test_transfer_verdict_on_summary_rows():
    rows = {("baseline", "cold", "NDCG@10"): 0.20, ("transfer", "cold", "NDCG@10"): 0.23,
            ("transfer", "cold", "p_wilcoxon_vs_baseline"): 0.001, ("baseline", "warm", "NDCG@10"): 0.40,
            ("transfer", "warm", "NDCG@10"): 0.38, ("transfer", "warm", "p_wilcoxon_vs_baseline"): 0.2}
    by = {("D", model, "full", subset, metric): {"value": v} for (model, subset, metric), v in rows.items()}
    assert transfer_verdict("D", by) == "D: transfer full: cold +15.0% (p=0.001) met, warm -5.0% (p=0.2) not hurt"
    assert transfer_verdict("E", by) == "E: not run"


def _ranks(path, full, users=(1, 2, 3, 4, 5, 6), cold=(True, True, True, False, False, False)):
    np.savez(path, users=np.array(users), cold=np.array(cold), full=np.array(full))
    return path


def test_seed_averaged_runs_needs_two_shared_seeds_on_disk(tmp_path):
    pytest.importorskip("scipy")
    base = {s: _ranks(tmp_path / f"b{s}.npz", [5, 9, 30, 2, 0, 40]) for s in (1, 2, 3)}
    other = {s: _ranks(tmp_path / f"o{s}.npz", [0, 1, 2, 2, 0, s]) for s in (2, 3, 4)}
    asked = []

    def mask():
        asked.append(1)
        return np.array([False, True, True, False, True, True, True])

    t = seed_averaged_runs(base, other, "full", "cold-none", mask)
    expect = seed_averaged_test([base[2], base[3]], [other[2], other[3]], "full", "cold-none", mask())
    assert t == {**expect, "seeds": [2, 3]} and t["users"] == 5 and t["mean_diff"] > 0
    assert seed_averaged_runs(base, {2: other[2]}, "full", "all") is None  # one shared seed
    other[3].unlink()  # a run's ranks gone: no test, and the mask is never built
    asked.clear()
    assert seed_averaged_runs(base, other, "full", "cold-none", mask) is None and not asked


def test_summary_falls_back_to_the_largest_per_seed_p(tmp_path, monkeypatch):
    import benchmarks.cross_domain as bench

    monkeypatch.setattr(bench, "RESULTS", tmp_path)  # no stored cross_domain.json
    runs = [{"dataset": "synthetic", "model": "transfer", "protocol": "full", "subset": "cold",
             "metric": "p_wilcoxon_vs_baseline", "value": p, "seeds": [s], "command": f"run {s}",
             "mean_ndcg10_diff": d, "run_dir": f"gone/seed{s}"} for s, p, d in ((2, 0.04, 0.01), (1, 0.2, 0.03))]
    (test,) = bench.test_rows(runs)
    assert (test["value"], test["seeds"], test["per_seed_p"]) == (0.2, [1, 2], [0.2, 0.04])
    assert test["test"] == "largest per-seed p" and test["mean_ndcg10_diff"] == pytest.approx(0.02)


def test_universal_goal_against_the_baselines():
    text, goal = versus_baselines(0.9665, {"popularity": 0.1915, "mf": 1.0})
    assert text == "beats popularity (0.9665 vs 0.1915); does NOT beat mf (0.9665 vs 1.0000, at the ceiling)"
    assert goal == "NOT met"
    assert versus_baselines(0.2, {"popularity": 0.1, "mf": 0.15})[1] == "met"
    assert versus_baselines(0.2, {"popularity": 0.2, "mf": None}) == ("ties popularity (0.2000 vs 0.2000); mf not run",
                                                                      "open")


def test_feature_ablation_differences_over_shared_seeds():
    full = {1: 0.50, 2: 0.52, 3: 0.51}
    assert seed_differences(full, {1: 0.40, 2: 0.44}) == "-0.0900 ± 0.0141 (2 seeds)"
    assert seed_differences(full, {3: 0.53}) == "+0.0200 (1 seed)"
    assert seed_differences(full, {4: 0.1}) == ""

"""benchmarks.trigrec paired tests on fake per-line rank files: the lines both runs share, the
seed-averaged difference, the per-seed differences and a p-value that tells a real gap from none."""
from __future__ import annotations

import json

import numpy as np
import pytest

import benchmarks.trigrec as bench


def _ranks(mod, target, seed, variant, lines, ranks):
    folder = mod.home(target, seed, mod.VARIANTS[variant][2]) / "rec" / target / f"bench-{variant}"
    folder.mkdir(parents=True)
    np.savez(folder / "test_c2dsr_ranks.npz", lines=np.asarray(lines), ranks=np.asarray(ranks))


def test_paired_tests_on_rank_files(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    mod = bench
    monkeypatch.setattr(mod, "home", lambda target, seed, suffix="": tmp_path / target / f"seed{seed}{suffix}")
    lines = np.arange(30)
    # kitchen, seeds 1 and 2: cross ranks every target first (NDCG 100%), the control at rank 21 (0%);
    # seed 2's cross file lacks line 29, so 29 lines are shared; seed 3 has only the control
    _ranks(mod, "kitchen", 1, "cross", lines, np.zeros(30, int))
    _ranks(mod, "kitchen", 1, "shuffled", lines, np.full(30, 20))
    _ranks(mod, "kitchen", 2, "cross", lines[:29], np.zeros(29, int))
    _ranks(mod, "kitchen", 2, "shuffled", lines, np.full(30, 20))
    _ranks(mod, "kitchen", 3, "shuffled", lines, np.full(30, 20))
    # food, seed 1: spe_other equal to bert4rec on every line -> no difference, p = 1
    same = np.arange(30) % 12  # ranks 0..11: some inside the top 10, some outside
    _ranks(mod, "food", 1, "spe_other", lines, same)
    _ranks(mod, "food", 1, "bert4rec", lines, same)

    rows = {(r["dataset"], r["model"], r["vs"]): r for r in mod.paired_tests(stored_in=None)}
    assert set(rows) == {("Food-Kitchen/Kitchen", "trigrec-cross_only", "trigrec-shuffled"),
                         ("Food-Kitchen/Food", "trigrec-spe_other_only", "bert4rec")}
    gap = rows[("Food-Kitchen/Kitchen", "trigrec-cross_only", "trigrec-shuffled")]
    assert gap["seeds"] == [1, 2] and gap["lines"] == 29
    assert gap["mean_diff"] == pytest.approx(100.0) and gap["per_seed_diff"] == pytest.approx([100.0, 100.0])
    assert gap["metric"] == "paired_wilcoxon_p_NDCG@10" and gap["value"] < 1e-5
    none = rows[("Food-Kitchen/Food", "trigrec-spe_other_only", "bert4rec")]
    assert none["mean_diff"] == 0.0 and none["value"] == 1.0 and none["seeds"] == [1]

    # a fresh clone lacks most rank files: a stored test over more seeds is kept, a stored test over
    # fewer seeds than the files on disk is computed again, and a comparison with no files at all
    # keeps its stored row
    stored = [dict(gap, seeds=[1, 2, 3], value=0.5), dict(none, seeds=[], value=0.25),
              dict(gap, dataset="Food-Kitchen/Food", model="trigrec", vs="bert4rec", value=0.125)]
    (tmp_path / "trigrec.json").write_text(json.dumps(stored))
    again = {(r["dataset"], r["model"], r["vs"]): r for r in mod.paired_tests(stored_in=tmp_path / "trigrec.json")}
    assert again[("Food-Kitchen/Kitchen", "trigrec-cross_only", "trigrec-shuffled")]["value"] == 0.5
    assert again[("Food-Kitchen/Food", "trigrec-spe_other_only", "bert4rec")]["value"] == 1.0
    assert again[("Food-Kitchen/Food", "trigrec", "bert4rec")]["value"] == 0.125 and len(again) == 3


def test_rows_carry_subsets_and_the_default_alias():
    rows = [bench.row("Food-Kitchen/Food", bench.DEFAULT, "sampled-999", "NDCG@10 (seen targets)", 11.0),
            bench.row("Food-Kitchen/Food", bench.DEFAULT, "full", "NDCG@10 (leak-controlled)", 4.0),
            bench.row("Food-Kitchen/Food", "bert4rec-ss", "sampled-999", "NDCG@10", 6.0),
            bench.row("Food-Kitchen/Food", "bert4rec-ss", "full", "sec_per_epoch", 9.0)]
    out = {(r["model"], r["protocol"], r["metric"], r.get("subset")): r["value"] for r in bench.with_subsets(rows)}
    assert out == {(bench.DEFAULT, "sampled-999", "NDCG@10", "seen-target"): 11.0,
                   ("trigrec-default", "sampled-999", "NDCG@10", "seen-target"): 11.0,
                   (bench.DEFAULT, "full", "NDCG@10", "leak-controlled"): 4.0,
                   ("trigrec-default", "full", "NDCG@10", "leak-controlled"): 4.0,
                   ("bert4rec-ss", "sampled-999", "NDCG@10", "all"): 6.0,
                   ("bert4rec-ss", "full", "sec_per_epoch", None): 9.0}

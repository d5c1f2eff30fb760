"""benchmarks.summary on a fake results folder: headline rows, spread, goal verdicts, and
files it does not know (noted, not fatal)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import summary


def _row(dataset, model, metric, value, std=0.0, seeds=(1, 2, 3), protocol="full", **extra):
    return {"dataset": dataset, "model": model, "protocol": protocol, "metric": metric, "value": value, "std": std,
            "seeds": list(seeds), "device": "cpu:test 2 cores", "command": f"python train.py --model {model} --seed <N>",
            **extra}


def _fake_results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    res.mkdir()
    seq = [
        _row("beauty", "sasrec", "NDCG@10", 0.0575, 0.0013),       # above its 0.0560 bar -> met
        _row("beauty", "bert4rec", "NDCG@10", 0.0303, 0.0010),     # below its 0.0443 bar -> not met
        _row("beauty", "popularity", "NDCG@10", 0.0055),
        _row("beauty", "sasrec", "HR@10", 0.08),                   # not a headline row: must not appear
    ]
    uni = [
        _row("ml-100k", "universal-simple", "NDCG@10", 0.1344, 0.0022),
        _row("ml-100k", "mf", "NDCG@10", 0.1142, 0.0020),
        _row("ml-100k", "popularity", "NDCG@10", 0.0825),
        _row("correlated", "universal-simple", "NDCG@10", 0.9665, 0.0018),
        _row("correlated", "mf", "NDCG@10", 1.0, 0.0),
        _row("correlated", "popularity", "NDCG@10", 0.1915),
    ]
    (res / "sequential.json").write_text(json.dumps(seq))
    (res / "universal.json").write_text(json.dumps(uni))
    (res / "sequential_runs.json").write_text("[]")               # per-seed file: ignored silently
    (res / "mystery.json").write_text('{"not": "rows"}')          # unknown: noted
    (res / "sequential_curves.png").write_bytes(b"\x89PNG")
    return res


def test_summary_rows_spread_goals_and_unknown(tmp_path):
    res = _fake_results(tmp_path)
    assert summary.main(["--results", str(res)]) == 0
    text = (res / "SUMMARY.md").read_text()
    lines = text.splitlines()

    # headline row: dataset, anchor from ANCHORS, mean ± std with the seed count, command and machine from the row
    sas = next(ln for ln in lines if ln.startswith("| beauty | sasrec | NDCG@10 | full |"))
    assert "0.0318" in sas and "0.0575 ± 0.0013 (n=3)" in sas
    assert "`python train.py --model sasrec --seed <N>`" in sas and "cpu:test 2 cores" in sas
    assert not any(ln.startswith("| beauty | sasrec | HR@10") for ln in lines)

    # goals computed from the numbers
    goal = {ln.split(" | ")[0].lstrip("| "): ln for ln in lines if " vs " in ln and ln.startswith("| ")}
    assert goal["beauty sasrec test NDCG@10 (full) ≥ 0.056"].endswith("**met** |")
    assert goal["beauty bert4rec test NDCG@10 (full) ≥ 0.0443"].endswith("**not met** |")
    assert goal["ml-100k: universal-simple NDCG@10 beats popularity and MF"].endswith("**met** |")
    assert goal["correlated: universal-simple NDCG@10 beats popularity and MF"].endswith("**not met** |")
    # a goal whose rows are absent is open, not met
    assert "open (rows missing)" in goal["peak RAM ≥ 8x below RecBole (ML-1M shape, max length 200)"]

    # unknown and missing files are noted; links to the per-pipeline tables and the plots
    assert "`mystery.json`: not a known aggregated benchmark file, skipped" in text
    assert "`trigrec.json`: missing" in text and "sequential_runs.json" not in text
    assert "[sequential.md](sequential.md)" in text and "[sequential_curves.png](sequential_curves.png)" in text
    # written atomically: no temp file left beside it
    assert sorted(p.name for p in res.iterdir() if p.name.startswith(".")) == []


def test_summary_survives_a_broken_file(tmp_path):
    res = _fake_results(tmp_path)
    (res / "universal.json").write_text("{broken")
    assert summary.main(["--results", str(res)]) == 0
    text = (res / "SUMMARY.md").read_text()
    assert "`universal.json`: unreadable" in text and "## Sequential models" in text


def test_paired_goal_reads_the_test_row_against_the_named_peer():
    ds = "Food-Kitchen/Food"
    rows = [{"dataset": ds, "model": m, "protocol": "sampled-999", "metric": "NDCG@10", "subset": "all", "value": v}
            for m, v in (("trigrec-default", 7.5), ("bert4rec-ss", 6.0), ("sasrec-merged", 7.4))]
    rows += [{"dataset": ds, "model": "trigrec-default", "vs": vs, "metric": "paired_wilcoxon_p_NDCG@10",
              "value": p, "mean_diff": d, "seeds": [1, 2, 3]} for vs, p, d in (("bert4rec-ss", 0.001, 1.5),
                                                                            ("sasrec-merged", 0.6, 0.1))]
    text, met = summary.paired_gain(ds, "trigrec-default", "bert4rec-ss")(rows)
    assert met is True and "+25.0%" in text and "p=0.001" in text
    # +1.4% over the merged peer is under the +5% aim and not significant; not losing holds
    assert summary.paired_gain(ds, "trigrec-default", "sasrec-merged", gain=0.05)(rows)[1] is False
    assert summary.paired_gain(ds, "trigrec-default", "sasrec-merged")(rows)[1] is True
    # significantly worse: loses
    worse = [dict(r, mean_diff=-0.5, value=0.01) if r.get("vs") == "sasrec-merged" else r for r in rows]
    assert summary.paired_gain(ds, "trigrec-default", "sasrec-merged")(worse)[1] is False
    assert summary.paired_gain(ds, "trigrec-default", "nobody")(rows) == ("rows missing", None)


def test_a_timed_goal_with_a_quality_bar_needs_both():
    """The BERT4Rec time goal is a run that meets the must within 30 minutes: a fast run below the
    must is not met, a fast run at the must is, and a missing quality row leaves the goal open."""
    check = next(c for text, _, c in summary.PIPELINES["sequential"].goals
                 if text.startswith("beauty: a whole BERT4Rec run that meets the must"))
    fast = _row("beauty", "bert4rec", "train_minutes", 25.5, seeds=(1,), device="cpu:test 2 cores, 2 torch threads")
    text, met = check([fast, _row("beauty", "bert4rec", "NDCG@10", 0.0351)])
    assert met is False and "minutes 25.5 vs ≤ 30 (2 torch threads)" in text and "0.0351 vs ≥ 0.0443" in text
    assert check([fast, _row("beauty", "bert4rec", "NDCG@10", 0.0450)])[1] is True
    assert check([_row("beauty", "bert4rec", "train_minutes", 42.5, seeds=(1,)),
                  _row("beauty", "bert4rec", "NDCG@10", 0.0450)])[1] is False
    assert check([fast])[1] is None
    # a failed part fails the goal even when the other part's row is missing
    assert check([_row("beauty", "bert4rec", "NDCG@10", 0.0351)])[1] is False


def test_the_sasrec_time_goal_takes_the_fastest_recipe_whose_seeds_meet_the_must():
    check = next(c for text, _, c in summary.PIPELINES["sequential"].goals
                 if text.startswith("beauty: a whole SASRec run that meets the must"))
    two = "cpu:test 2 cores, 2 torch threads"
    slow = [_row("beauty", "sasrec-ce-wd01", "NDCG@10", 0.0570), _row("beauty", "sasrec-ce-wd01", "train_minutes", 15.7,
                                                                     seeds=(1,), device=two)]
    text, met = check(slow)
    assert met is False and text == "sasrec-ce-wd01: 15.7 minutes (2 torch threads) vs ≤ 5"
    faster = [_row("beauty", "sasrec-ce-d96b3-e40", "NDCG@10", 0.0563), _row("beauty", "sasrec-ce-d96b3-e40",
                                                                           "train_minutes", 11.2, device=two)]
    assert check(slow + faster)[0].startswith("sasrec-ce-d96b3-e40: 11.2 minutes")
    # under the must, or fewer than 3 seeds: not a candidate, whatever its time
    below = [dict(faster[0], value=0.0559), faster[1]]
    assert check(slow + below)[0].startswith("sasrec-ce-wd01: 15.7")
    assert check(slow + [dict(faster[0], seeds=[1, 2]), faster[1]])[0].startswith("sasrec-ce-wd01")
    assert check([dict(slow[1], value=4.5), slow[0]])[1] is True
    assert check(below)[1] is None


def test_distillation_goals_need_a_flat_control_all_seeds_and_a_paired_test():
    """Issue 23's distillation must and aim on fake rows: a gain with a significantly gaining
    control does not count, a one-seed ablation is no candidate, and the aim is significant
    only against the distilled model's own plain model."""
    five = (1, 2, 3, 4, 5)
    rows = [_row("ml-100k", "sasrec", "NDCG@10", 0.095, seeds=five), _row("ml-100k", "bert4rec", "NDCG@10", 0.072, seeds=five),
            _row("ml-100k", "sasrec+distill", "NDCG@10", 0.104, seeds=five),
            _row("ml-100k", "sasrec+distill", "gain_pct_NDCG@10", 9.5, seeds=five),
            _row("ml-100k", "sasrec+distill", "paired_wilcoxon_p_NDCG@10", 0.01, seeds=five),
            _row("ml-100k", "sasrec+distill-shuffled", "NDCG@10", 0.103, seeds=five),
            _row("ml-100k", "sasrec+distill-shuffled", "gain_pct_NDCG@10", 8.4, seeds=five),  # the control gains too
            _row("ml-100k", "sasrec+distill-shuffled", "paired_wilcoxon_p_NDCG@10", 0.02, seeds=five),
            _row("ml-100k", "sasrec+distill-x", "NDCG@10", 0.2, seeds=(1,)),  # one seed: ignored
            _row("ml-100k", "sasrec+distill-x", "gain_pct_NDCG@10", 50.0, seeds=(1,)),
            _row("ml-100k", "sasrec+distill-x", "paired_wilcoxon_p_NDCG@10", 1e-9, seeds=(1,))]
    text, ok = summary.distill_must()(rows)
    assert ok is False and "control +8.4%" in text and "distill-x" not in text
    text, ok = summary.distill_aim()(rows)
    assert ok is True and "sasrec+distill 0.1040 vs best plain sasrec 0.0950 (p=0.01)" in text
    bert = [_row("ml-100k", "bert4rec+distill", "NDCG@10", 0.082, seeds=five),
            _row("ml-100k", "bert4rec+distill", "gain_pct_NDCG@10", 14.0, seeds=five),
            _row("ml-100k", "bert4rec+distill", "paired_wilcoxon_p_NDCG@10", 0.005, seeds=five),
            _row("ml-100k", "bert4rec+distill-shuffled", "gain_pct_NDCG@10", -1.0, seeds=five),
            _row("ml-100k", "bert4rec+distill-shuffled", "paired_wilcoxon_p_NDCG@10", 0.7, seeds=five)]
    text, ok = summary.distill_must()(rows + bert)
    assert ok is True and text.startswith("met by bert4rec+distill +14.0%")
    # a distilled BERT4Rec above the best plain SASRec has no paired test across kinds: open, not met
    lifted = [dict(r, value=0.2) if r["model"] == "bert4rec+distill" and r["metric"] == "NDCG@10" else r for r in bert]
    assert summary.distill_aim()(rows + lifted)[1] is None
    assert summary.distill_must()([])[1] is None


def test_fusion_goal_takes_the_best_target_only_model_of_each_subset():
    from benchmarks.cross_domain import fusion_goal
    from cross_domain.evaluate import POOLED

    label, ndcg, by = "Food-Kitchen/Food", {}, {}
    values = {("cold", "baseline"): 0.20, ("cold", "ensemble"): 0.21, ("cold", "fusion"): 0.24,
              ("leak-controlled", "baseline"): 0.010, ("leak-controlled", "ensemble"): 0.009,
              ("leak-controlled", "fusion"): 0.0104, ("warm", "baseline"): 0.40, ("warm", "ensemble"): 0.41,
              ("warm", "fusion"): 0.41}
    for (subset, model), value in values.items():
        ndcg[(label, model + "-e60", "full", subset)] = [_row(label, model + "-e60", "NDCG@10", value, seeds=(s,)) for s in (1, 2)]
        if model == "fusion":
            for base in ("baseline", "ensemble"):
                by[(label, "fusion-e60", "full", subset, f"p_wilcoxon_vs_{base}")] = {"value": 0.001, "test": POOLED}
    got = {subset: (text, ok) for subset, text, ok in fusion_goal(ndcg, by, label, "-e60")}
    assert got["cold"][1] is True and "over ensemble" in got["cold"][0]  # +14.3% over the ensemble, not +20% over base
    assert got["leak-controlled"][1] is False and "+4.0% over baseline" in got["leak-controlled"][0]
    assert got["warm"][1] is True

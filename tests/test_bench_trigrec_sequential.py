"""What benchmarks/trigrec.py and benchmarks/sequential.py drive: the per-line C2DSR NDCG of a stage-2 run
(``recommendation_model.train_eval.c2dsr_line_ndcg``), the environment of a measured child
(``core.cost.allocator_env``), the rows a stage-2 run's results.json gives and the RecBole command line."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import benchmarks.sequential as seq
import benchmarks.trigrec as tri
from core.cost import LEAN_MEMORY_ENV, allocator_env
from recommendation_model.train_eval import RANKS_FILE, c2dsr_line_ndcg


def test_c2dsr_line_ndcg_reads_the_rank_file(tmp_path):
    assert c2dsr_line_ndcg(tmp_path) is None  # a run from before the rank file
    np.savez(tmp_path / RANKS_FILE, lines=np.array([7, 3, 9]), ranks=np.array([0, 2, 10]))
    assert c2dsr_line_ndcg(tmp_path) == pytest.approx({7: 1.0, 3: 0.5, 9: 0.0})  # 0-based ranks; 1/log2(4) = 0.5
    assert c2dsr_line_ndcg(tmp_path, k=20)[9] == pytest.approx(1 / np.log2(12))


def test_allocator_env_drops_the_parents_allocator_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    monkeypatch.setenv("KEEP_ME", "1")
    plain = allocator_env(EXTRA="x")
    assert "MALLOC_ARENA_MAX" not in plain and "GLIBC_TUNABLES" not in plain
    assert plain["KEEP_ME"] == "1" and plain["EXTRA"] == "x"
    lean = allocator_env(lean=True)
    assert {k: lean[k] for k in LEAN_MEMORY_ENV} == LEAN_MEMORY_ENV and "MALLOC_ARENA_MAX" not in lean


def _stage2(tmp_path, monkeypatch, res: dict, variant: str = "cross") -> list[dict]:
    monkeypatch.setattr(tri, "home", lambda target, seed, suffix="": tmp_path / target / f"seed{seed}{suffix}")
    monkeypatch.setattr(tri, "RUNS_FILE", tmp_path / "runs.json")
    out = tmp_path / "kitchen" / "seed1" / "rec" / "kitchen" / f"bench-{variant}"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(res))
    (out / "metrics.jsonl").write_text('{"epoch_seconds": 3.0}\n{"epoch_seconds": 5.0}\n')
    tri.cmd_stage2(argparse.Namespace(target="kitchen", seed=1, override="", tree="", collect_only=True, variant=variant,
                                      tag="", ranks_only=False))
    return json.loads((tmp_path / "runs.json").read_text())


def test_stage2_rows_on_all_lines_and_issue_23_subsets(tmp_path, monkeypatch):
    c2 = {m: 0.01 * i for i, m in enumerate(["MRR", "NDCG@1", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10"], 1)}
    full = {"NDCG@10": 0.05, "HR@10": 0.1, "MRR": 0.04, "NDCG@20": 0.06}
    res = {"best_epoch": 4, "threads": 1, "test_c2dsr": c2, "test_full": full, "valid": {"NDCG@10": 0.2},
           "test_c2dsr_by_target": {"seen": c2, "unseen_target_share": 0.25},
           "test_c2dsr_subsets": {"lines": {"leak-controlled": 40}, "leak-controlled": c2},
           "test_full_leak_controlled": {"NDCG@10": 0.02, "HR@10": 0.03, "users": 50}}
    rows = _stage2(tmp_path, monkeypatch, res)
    got = [(r["protocol"], r["metric"]) for r in rows]
    assert got == ([("sampled-999", m) for m in tri.C2DSR_METRICS]
                   + [("sampled-999", f"{m} (seen targets)") for m in tri.SUBSET_METRICS]
                   + [("full", m) for m in tri.FULL_METRICS]
                   + [("sampled-999", f"{m} (leak-controlled)") for m in tri.SUBSET_METRICS]
                   + [("full", "NDCG@10 (leak-controlled)"), ("full", "HR@10 (leak-controlled)"),
                      ("full", "sec_per_epoch"), ("sampled-999", "valid NDCG@10")])
    by = {(r["protocol"], r["metric"]): r for r in rows}
    assert by[("sampled-999", "NDCG@10")]["value"] == pytest.approx(4.0) and rows[0]["model"] == "trigrec-cross_only"
    assert by[("sampled-999", "MRR (seen targets)")]["unseen_target_share"] == 0.25
    assert by[("sampled-999", "HR@10 (leak-controlled)")]["lines"] == 40
    assert by[("full", "NDCG@10 (leak-controlled)")]["users"] == 50
    assert by[("full", "sec_per_epoch")]["value"] == 4.0 and "unit" not in by[("full", "sec_per_epoch")]
    assert all(r["unit"] == "%" and r["best_epoch"] == 4 for r in rows if r["metric"] != "sec_per_epoch")
    # an older run (no C2DSR subsets, no validation) keeps what it has
    older = _stage2(tmp_path / "old", monkeypatch, {"best_epoch": 2, "test_c2dsr": c2, "test_full": full})
    assert [r["metric"] for r in older] == [*tri.C2DSR_METRICS, *tri.FULL_METRICS, "sec_per_epoch"]


def test_recbole_command_line(tmp_path, monkeypatch):
    python = tmp_path / "recbole-venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")  # the venv exists: recbole_env.sh is not run
    monkeypatch.setattr(seq, "WORK", tmp_path)
    args = argparse.Namespace(dataset="beauty", model="sasrec", seed=3)
    argv = seq.recbole_argv(args, "speed", tmp_path / "out.json", max_batches=7)
    assert argv[:2] == [str(python), str(seq.REPO / "benchmarks" / "recbole_side.py")]
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert flags["--model"] == "SASRec" and flags["--seed"] == "3" and flags["--max-batches"] == "7"
    assert argv[-6:] == ["--mode", "speed", "--max-batches", "7", "--out", str(tmp_path / "out.json")]
    assert flags["--inner"] == str(4 * int(flags["--hidden"]))


def test_summarize_times_only_the_best_threaded_runs():
    """A one-thread run beside others and a quiet two-thread run of the same recipe: the time
    rows aggregate the quiet one only; quality rows keep every seed."""
    def run(seed, metric, value, threads):
        return {"dataset": "beauty", "model": "sasrec", "protocol": "full", "metric": metric, "value": value,
                "seeds": [seed], "threads": threads}
    runs = [run(1, "train_minutes", 5.5, 2), run(2, "train_minutes", 19.0, 1), run(3, "train_minutes", 12.0, 1),
            run(1, "NDCG@10", 0.05, 2), run(2, "NDCG@10", 0.06, 1),
            run(1, "minutes_to_valid_NDCG@10_0.05", 3.0, 1)]  # only loaded runs: kept, labelled by their threads
    kept = seq.quiet_times(runs)
    assert [r["value"] for r in kept if r["metric"] == "train_minutes"] == [5.5]
    assert [r["value"] for r in kept if r["metric"] == "NDCG@10"] == [0.05, 0.06]
    assert [r["value"] for r in kept if r["metric"].startswith("minutes_to")] == [3.0]


def test_aggregated_rows_name_every_machine_their_seeds_ran_on():
    """A mean over seeds timed on two CPUs must say so (an AVX2 and an AVX512 EPYC differ 1.7x an epoch)."""
    from benchmarks.common import aggregate

    def run(seed, value, device):
        return {"dataset": "beauty", "model": "sasrec", "protocol": "full", "metric": "train_minutes", "value": value,
                "seeds": [seed], "device": device, "command": f"x --seed {seed}"}
    a, b = "cpu:x86_64 2 cores (AMD EPYC, AVX512), 2 torch threads", "cpu:x86_64 2 cores (AMD EPYC, AVX2), 2 torch threads"
    (mixed,) = aggregate([run(1, 11.0, a), run(2, 18.0, b), run(3, 11.5, a)])[1]
    assert mixed["device"] == f"{b}; {a}" and mixed["seeds"] == [1, 2, 3]
    (one,) = aggregate([run(1, 11.0, a), run(3, 11.5, a)])[1]
    assert one["device"] == a


def test_recency_scores_the_test_users_with_and_without_the_validation_item(tmp_path, monkeypatch):
    """``recency`` re-scores a finished run through the project's evaluator: with the full input it
    reproduces the run's own test NDCG@10; cutting the validation item off changes the score."""
    import os
    import subprocess
    import sys

    from core.store import REPO_ROOT

    env = {**os.environ, "RECSYS_HOME": str(tmp_path / "state_dict")}
    over = (f"device=cpu,data.data_root={tmp_path / 'data'},training.epochs=3,run_name=r,eval.sampled=[],"
            "model.hidden_units=32,training.learning_rate=0.003,training.threads=1")
    proc = subprocess.run([sys.executable, "-m", "distillation.training", "--override", over], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "state_dict" / "distillation" / "synthetic-a" / "r"
    monkeypatch.setattr(seq, "REPO", tmp_path)
    monkeypatch.setattr(seq, "RUNS_FILE", tmp_path / "runs.json")
    seq.cmd_recency(argparse.Namespace(dataset="synthetic-a", model="sasrec", label="", seed=1, from_run="r"))
    rows = {r["metric"]: r["value"] for r in json.loads((tmp_path / "runs.json").read_text())}
    without = rows["NDCG@10_test_input_without_valid_item"]
    with_item = without * rows["test_gain_from_valid_item"]
    assert with_item == pytest.approx(json.loads((run / "results.json").read_text())["test"]["NDCG@10"], rel=1e-6)
    assert 0 < without != pytest.approx(with_item)


def test_paired_compares_two_run_families_per_user(tmp_path, monkeypatch, capsys):
    """``paired`` averages each user's test NDCG@10 over the seeds both families finished, then
    tests the per-user differences; a seed one family lacks is left out."""
    users = np.arange(60)
    low = 1 / np.log2(11)  # NDCG@10 of a target at 0-based rank 9

    def finished(name, ranks):
        run = tmp_path / "state_dict" / "distillation" / "beauty" / name
        run.mkdir(parents=True)
        np.savez(run / "test_ranks.npz", users=users, ranks=ranks)

    for seed in (1, 2, 3):
        finished(f"base-s{seed}", np.full(60, 9))
    finished("new-s1", np.where(users < 40, 0, 9))  # seed 1: 40 users moved to rank 0
    finished("new-s2", np.where(users < 20, 0, 9))  # seed 2: 20 of them; seed 3 never ran
    monkeypatch.setattr(seq, "REPO", tmp_path)
    t = seq.paired_runs("beauty", "base-s{seed}", "new-s{seed}", [1, 2, 3])
    assert t["seeds"] == [1, 2] and t["users"] == 60
    # per user, averaged over seeds 1-2: 20 users gain 1 - low, 20 gain (1 - low) / 2, 20 nothing
    assert t["mean_diff"] == pytest.approx((20 * (1 - low) + 20 * (1 - low) / 2) / 60)
    assert t["base_mean"] == pytest.approx(low)
    assert t["other_mean"] == pytest.approx(low + t["mean_diff"])
    assert t["wilcoxon_p"] < 1e-6 and t["t_p"] < 1e-6
    seq.cmd_paired(argparse.Namespace(dataset="beauty", base="base-s{seed}", other="new-s{seed}", seeds="1,2,3"))
    assert "seeds [1, 2], 60 users" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no .seed."):
        seq.paired_runs("beauty", "base-s1", "new-s{seed}", [1])
    with pytest.raises(SystemExit, match="no seed of"):
        seq.paired_runs("beauty", "base-s{seed}", "new-s{seed}", [3])

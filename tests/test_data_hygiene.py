"""Issue 21, data readers and evaluation: repeated items in ranked lists, byte-order marks,
dataset names the trainers refuse, repeat targets, C2DSR pairs of any size, evaluation progress.

Every metric below is computed by hand in the comment next to it.
"""
from __future__ import annotations

import codecs
import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.candidates import candidate_metrics, read_candidates, read_ground_truth, read_scored_candidates
from core.errors import DataError, UserError
from core.metrics import first_hits, list_metrics

REPO = Path(__file__).resolve().parent.parent
BOM = codecs.BOM_UTF8
L2 = math.log2


def _jsonl(path: Path, rows, bom: bool = False) -> Path:
    path.write_bytes((BOM if bom else b"") + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path


def _run(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# =========================================================================== 1. repeated items
def test_repeated_item_counts_once_in_the_metric():
    # [a, a, a, b, c] vs {a}: before, Recall@5 = 3.0 and NDCG@5 = (1 + 1/log2 3 + 1/log2 4) / 1 = 2.13
    res = candidate_metrics({"u": ["a", "a", "a", "b", "c"]}, {"u": {"a"}}, [5])
    assert res["Recall@5"] == 1.0 and res["NDCG@5"] == 1.0 and res["HR@5"] == 1.0 and res["MRR"] == 1.0
    assert res["Precision@5"] == pytest.approx(1 / 5)


def test_repeat_keeps_its_slot_as_a_miss():
    # [a, a, a, b, c] vs {a, c}: hits at places 1 and 5 (the copies of a are misses in their slots)
    res = candidate_metrics({"u": ["a", "a", "a", "b", "c"]}, {"u": {"a", "c"}}, [3, 5])
    assert res["Recall@3"] == 0.5 and res["Recall@5"] == 1.0
    assert res["NDCG@5"] == pytest.approx((1 + 1 / L2(6)) / (1 + 1 / L2(3)))
    assert res["NDCG@3"] == pytest.approx(1 / (1 + 1 / L2(3)))


def test_first_hits_and_list_metrics_guard():
    assert first_hits(["a", None, "a", "b", "a"], {"a", "b"}) == [1.0, 0.0, 0.0, 1.0, 0.0]
    # a hits row with more hits than relevant items can only come from a repeated item
    with pytest.raises(ValueError, match="repeats an item"):
        list_metrics(torch.tensor([[1, 1, 1, 0, 0]]), torch.tensor([1]), [5])


def test_candidate_file_with_a_repeated_item_is_refused_with_file_line(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", [{"user_id": "u0", "items": ["x", "y"]},
                                      {"user_id": "u1", "results": [{"item_id": i} for i in "aaabc"]}])
    with pytest.raises(DataError, match="lists item 'a' twice \\(positions 1 and 2\\)") as err:
        read_scored_candidates(p)
    assert str(err.value).startswith(f"{p}:2: ") and "--repeats keep-first" in str(err.value)
    # keep-first: the copies become misses in their slots; placeholders may repeat freely
    assert read_candidates(p, repeats="keep-first")["u1"] == ["a", None, None, "b", "c"]
    q = _jsonl(tmp_path / "pad.jsonl", [{"user_id": "u", "items": ["[PAD]", "a", "[PAD]"]}])
    assert read_candidates(q) == {"u": [None, "a", None]}


def test_candidates_cli_refuses_then_keep_first_scores_at_most_one(tmp_path):
    cand = _jsonl(tmp_path / "c.jsonl", [{"user_id": "u1", "items": ["a", "a", "a", "b", "c"]}])
    gt = _jsonl(tmp_path / "g.jsonl", [{"user_id": "u1", "item_id": "a"}])
    line = _one_error_line(_run("core.candidates", "--candidates", cand, "--gt", gt, "--ks", "5"))
    assert f"{cand}:1: user 'u1' lists item 'a' twice" in line
    out = tmp_path / "m.json"
    ok = _run("core.candidates", "--candidates", cand, "--gt", gt, "--ks", "5", "--repeats", "keep-first",
              "--output", out)
    assert ok.returncode == 0, ok.stderr
    res = json.loads(out.read_text())
    assert res["Recall@5"] == 1.0 and res["NDCG@5"] == 1.0


# =========================================================================== 9. byte-order marks
def test_candidate_and_ground_truth_files_with_a_bom(tmp_path):
    cand = _jsonl(tmp_path / "c.jsonl", [{"user_id": "u1", "items": ["x", "y"]}], bom=True)
    gt = _jsonl(tmp_path / "g.jsonl", [{"user_id": "u1", "item_id": "y"}], bom=True)
    assert read_candidates(cand) == {"u1": ["x", "y"]}  # before: malformed JSON at line 1
    res = candidate_metrics(read_candidates(cand), read_ground_truth(gt), [2])
    assert res["NDCG@2"] == pytest.approx(1 / L2(3)) and res["users_without_list"] == 0


def test_sasrec_txt_with_a_bom(tmp_path):
    from core.data.prepare import sasrec_txt

    f = tmp_path / "wiki.txt"
    f.write_bytes(BOM + b"1 5\n1 6\n2 5\n")
    p = sasrec_txt.load(f)  # before: "user id 'ï»¿1' is not an integer"
    assert p.data.user_ids == [1, 2] and p.data.item_ids == [5, 6]
    assert p.data.sequence(1).tolist() == [1, 2]


def test_seq_lines_with_a_bom(tmp_path):
    from core.data.prepare import seq_lines

    f = tmp_path / "Beauty.txt"
    f.write_bytes(BOM + b"1 3 4\r\n2 4\r\n")
    p = seq_lines.load(f)
    assert p.name == "beauty" and p.data.user_ids == [1, 2] and p.data.sequence(1).tolist() == [1, 2]


def test_recbole_with_a_bom(tmp_path):
    from core.data.prepare import recbole

    f = tmp_path / "toy.inter"
    f.write_bytes(BOM + "user_id:token\titem_id:token\ttimestamp:float\nu1\ti2\t2\nu1\ti1\t1\n".encode())
    p = recbole.load(f)  # before: "header has no 'user_id' column" ('\ufeffuser_id')
    assert p.data.user_ids == ["u1"] and p.data.item_ids == ["i2", "i1"]
    assert p.data.sequence(1).tolist() == [2, 1]  # ordered by timestamp: i1 then i2


def test_movielens_and_amazon_2023_with_a_bom(tmp_path):
    from core.data.prepare import amazon2023, movielens

    ml = tmp_path / "ml-1m"
    ml.mkdir()
    (ml / "ratings.dat").write_bytes(BOM + b"1::10::5::100\n1::20::4::200\n")
    p = movielens.load(ml)
    assert p.data.user_ids == [1] and p.data.item_ids == [10, 20]

    def review(user, asin, ts):
        return json.dumps({"rating": 5.0, "user_id": user, "parent_asin": asin, "asin": asin, "timestamp": ts})

    a, b = tmp_path / "Books.jsonl", tmp_path / "Movies.jsonl.gz"
    a.write_bytes(BOM + (review("U1", "B1", 1) + "\n" + review("U1", "B2", 3) + "\n").encode())
    with gzip.open(b, "wb") as fh:
        fh.write(BOM + (review("U1", "M1", 2) + "\n").encode())
    q = amazon2023.load([a, b])
    assert q.data.n_users == 1 and q.data.n_interactions == 3


def test_c2dsr_files_with_a_bom(tmp_path):
    from core.data.c2dsr import read_c2dsr_eval

    folder = _c2dsr_pair(tmp_path, 2, 2, {"test": ["0\t0\t0|1|d|\t3|2|d|"]}, bom=True)
    ev = read_c2dsr_eval(folder, "test")
    assert ev.users.tolist() == [0] and ev.targets.tolist() == [4]


# =========================================================================== 10. dataset names
@pytest.mark.parametrize("out_name, suggestion", [("my data", "my_data"), ("café", "cafe")])
def test_prepare_into_a_name_the_trainers_refuse_writes_nothing(tmp_path, out_name, suggestion):
    f = tmp_path / "x.txt"
    f.write_text("1 2\n1 3\n1 4\n")
    out = tmp_path / out_name
    line = _one_error_line(_run("core.data.prepare", "sasrec-txt", "--path", f, "--out", out))
    # before: the folder was written, then `--override data.dataset=...` was refused by core.store.check_name
    assert f"invalid dataset name {out_name!r} (from --out)" in line
    assert f"use --out {tmp_path / suggestion}" in line
    assert not out.exists()


def test_prepare_with_a_spaced_name_suggests_a_safe_one(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("1 2\n")
    line = _one_error_line(_run("core.data.prepare", "sasrec-txt", "--path", f, "--name", "Amazon Books"))
    assert "invalid dataset name 'Amazon Books' (from --name)" in line and line.endswith("use --name Amazon_Books")
    # a file name with a space: the derived name is refused, with a suggestion
    g = tmp_path / "my ratings.txt"
    g.write_text("1 2\n")
    line = _one_error_line(_run("core.data.prepare", "sasrec-txt", "--path", g))
    assert "pass --name my_ratings" in line


def test_write_prepared_checks_the_folder_name(tmp_path):
    from core.data.prepare import sasrec_txt
    from core.data.prepare.common import write_prepared

    f = tmp_path / "x.txt"
    f.write_text("1 2\n1 3\n")
    p = sasrec_txt.load(f, out=tmp_path / "two words")
    with pytest.raises(UserError, match="invalid dataset name 'two words'"):
        write_prepared(p)
    assert not (tmp_path / "two words").exists()


# =========================================================================== repeat targets
def _repeat_split():
    from core.data.sequences import SequenceData
    from core.data.splits import leave_one_out

    # user 1: 1 2 3 | 1  (test target 1 is already in the history); user 2: 2 3 4 | 5
    data = SequenceData.from_lists([[1, 2, 3, 1], [2, 3, 4, 5]], n_items=5, user_ids=["u1", "u2"], item_ids=list(range(1, 6)))
    return data, leave_one_out(data)


def _by_id(inputs, users):  # item i scores i: a higher id ranks higher
    return torch.arange(6, dtype=torch.float32).expand(len(inputs), -1)


def test_repeat_targets_keep_and_exclude_hand_computed():
    from core.evaluation import Evaluator

    _data, split = _repeat_split()
    keep = Evaluator(split, "test", 4, [1, 3], sampled=())
    assert sorted(zip(keep.part.users.tolist(), keep.repeat.tolist())) == [(1, True), (2, False)]
    assert keep.repeat_share == 0.5
    res = keep.run(_by_id)
    # keep: user 1's history {2, 3} is masked, target 1 stays: items 4, 5 ahead -> rank 2 (0-based)
    # NDCG@3 = 1/log2(4) = 0.5, MRR 1/3; user 2: target 5 first -> NDCG 1, MRR 1
    assert res["NDCG@3"] == pytest.approx((0.5 + 1.0) / 2) and res["HR@3"] == 1.0
    assert res["MRR"] == pytest.approx((1 / 3 + 1.0) / 2) and res["HR@1"] == 0.5
    excl = Evaluator(split, "test", 4, [1, 3], sampled=(), repeat_targets="exclude").run(_by_id)
    # exclude: user 1 is a miss (all metrics 0); user 2 unchanged
    assert excl["NDCG@3"] == pytest.approx(0.5) and excl["HR@3"] == 0.5 and excl["MRR"] == pytest.approx(0.5)


def test_repeat_targets_exclude_applies_to_sampled_and_chunked_protocols():
    from core.evaluation import Evaluator

    _data, split = _repeat_split()
    # 1 negative: user 1 draws 4 or 5 (history 2, 3 and target 1 excluded) -> rank 1 of 2, a hit at 3
    # under keep; user 2 can only draw 1 -> its target 5 is first
    keep = Evaluator(split, "test", 4, [3], sampled=(1,)).run(_by_id)
    assert keep["sampled-1/HR@3"] == 1.0 and keep["sampled-1/MRR"] == pytest.approx((1 / 2 + 1) / 2)
    ev = Evaluator(split, "test", 4, [3], sampled=(1,), repeat_targets="exclude")
    res = ev.run(_by_id)
    assert res["sampled-1/HR@3"] == 0.5 and res["sampled-1/MRR"] == pytest.approx(0.5)  # user 1 a miss
    assert np.isinf(ev.last_ranks[1]).sum() == 1
    chunked = Evaluator(split, "test", 4, [3], sampled=(), repeat_targets="exclude", item_chunk=2).run(_by_id)
    assert chunked["NDCG@3"] == pytest.approx(0.5)


def test_bad_repeat_targets_value():
    from core.config import load_config
    from core.evaluation import Evaluator
    from core.seqrec import SeqRecConfig

    _data, split = _repeat_split()
    with pytest.raises(UserError, match="repeat_targets='drop': use keep"):
        Evaluator(split, "test", 4, [3], sampled=(), repeat_targets="drop")
    assert load_config(SeqRecConfig, overrides="eval.repeat_targets=exclude").eval.repeat_targets == "exclude"
    with pytest.raises(UserError, match="repeat_targets") as err:
        load_config(SeqRecConfig, overrides="eval.repeat_targets=drop")
    assert "keep" in str(err.value) and "\n" not in str(err.value)


def test_preparer_reports_repeat_target_shares(tmp_path):
    f = tmp_path / "rep.txt"
    # user 1: 1 2 1 (test target 1 repeats; valid target 2 does not); user 2: 5 6 7 (none);
    # user 3: 1 2 2 2 (both repeat) -> test 2/3, valid 1/3
    f.write_text("1 1\n1 2\n1 1\n2 5\n2 6\n2 7\n3 1\n3 2\n3 2\n3 2\n")
    out = tmp_path / "rep"
    proc = _run("core.data.prepare", "sasrec-txt", "--path", f, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "  repeat targets: 66.7% of test, 33.3% of valid" in proc.stdout.splitlines()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["repeat_targets"] == {"test": pytest.approx(2 / 3, abs=1e-6), "valid": pytest.approx(1 / 3, abs=1e-6)}


# =========================================================================== C2DSR pairs of any size
def _c2dsr_pair(root: Path, n_a: int, n_b: int, lines: dict[str, list[str]], bom: bool = False) -> Path:
    folder = root / "pair"
    folder.mkdir(exist_ok=True)
    pre = BOM if bom else b""
    for name, n in (("Alist.txt", n_a), ("Blist.txt", n_b)):
        (folder / name).write_bytes(pre + "".join(f"{900 + i}\tX{i}\t{i}\n" for i in range(n)).encode())
    for which, rows in lines.items():
        fname = {"valid": "validdata_new.txt", "test": "testdata_new.txt"}[which]
        (folder / fname).write_bytes(pre + "".join(r + "\n" for r in rows).encode())
    return folder


def test_c2dsr_pair_of_other_sizes_reads_domains_from_the_lists(tmp_path):
    from core.data.c2dsr import read_c2dsr_eval

    # A has 3 items (raw 0..2), B has 4 (raw 3..6). Line 1: tokens out of time order; after the
    # stable sort by timestamp: 6 (t=1), 0 (t=2), 4 (t=3) -> target raw 4 = index 5, domain B.
    folder = _c2dsr_pair(tmp_path, 3, 4, {"valid": ["7\t0\t0|2|d|\t4|3|d|\t6|1|d|", "8\t1\t5|1|d|\t2|9|d|"]})
    ev = read_c2dsr_eval(folder, "valid")
    assert (ev.n_a, ev.n_b) == (3, 4)
    assert ev.targets.tolist() == [5, 3] and ev.target_domain.tolist() == [1, 0]  # before: [0, 0] (29,207 food items)
    assert [h.tolist() for h in ev.histories] == [[7, 1], [6]]
    assert ev.item_domain(np.array([1, 3, 4, 7])).tolist() == [0, 0, 1, 1]


def test_c2dsr_pair_with_ids_past_food_kitchen(tmp_path):
    from core.data.c2dsr import read_c2dsr_eval

    # a Movie-Book-sized pair: ids past Food-Kitchen's 64,093 used to be refused
    folder = _c2dsr_pair(tmp_path, 60_000, 10_000, {"test": ["0\t0\t59999|1|d|\t69999|2|d|"]})
    ev = read_c2dsr_eval(folder, "test")
    assert ev.targets.tolist() == [70_000] and ev.target_domain.tolist() == [1]


def test_c2dsr_item_beyond_the_lists_names_file_line(tmp_path):
    from core.data.c2dsr import read_c2dsr_eval

    folder = _c2dsr_pair(tmp_path, 2, 2, {"test": ["0\t0\t0|1|d|\t1|2|d|", "1\t0\t0|1|d|\t4|2|d|"]})
    with pytest.raises(DataError) as err:
        read_c2dsr_eval(folder, "test")
    msg = str(err.value)
    assert msg.startswith(f"{folder / 'testdata_new.txt'}:2: item 4 is outside the pair's item space 0..3")
    assert "Alist.txt 2 + Blist.txt 2" in msg


def test_c2dsr_missing_or_gapped_item_list(tmp_path):
    from core.data.c2dsr import read_c2dsr_eval

    folder = _c2dsr_pair(tmp_path, 2, 2, {"test": ["0\t0\t0|1|d|\t1|2|d|"]})
    (folder / "Blist.txt").write_text("10\tX\t0\n11\tY\t2\n")
    with pytest.raises(DataError, match="Blist.txt: local indexes must run 0..1 without gaps; 1 is missing"):
        read_c2dsr_eval(folder, "test")
    (folder / "Blist.txt").unlink()
    with pytest.raises(DataError, match="Blist.txt: C2DSR item list not found"):
        read_c2dsr_eval(folder, "test")


def test_c2dsr_food_kitchen_sizes_from_the_real_lists(shared_data):
    from core.data.c2dsr import read_c2dsr_eval

    folder = shared_data / "food-kitchen" / "c2dsr"
    if not (folder / "testdata_new.txt").is_file():
        pytest.skip("no C2DSR Food-Kitchen files")
    ev = read_c2dsr_eval(folder, "test")
    # the README's counts: 29,207 food and 34,886 kitchen items; test targets 2,747 A / 5,659 B
    assert (ev.n_a, ev.n_b) == (29_207, 34_886)
    assert len(ev) == 8_406 and int(ev.target_domain.sum()) == 5_659


# =========================================================================== progress
def test_evaluation_progress_only_on_a_terminal_for_many_users(monkeypatch, capsys):
    from core import evaluation
    from core.evaluation import Evaluator

    _data, split = _repeat_split()
    ev = Evaluator(split, "test", 4, [3], sampled=())
    ev.run(_by_id)
    assert "eval test" not in capsys.readouterr().err  # 2 users, not a terminal: no bar
    monkeypatch.setattr(evaluation, "PROGRESS_MIN_USERS", 1)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    ev.run(_by_id)
    assert "eval test" in capsys.readouterr().err

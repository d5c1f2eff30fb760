"""The candidate-list evaluator: hand-computed metrics, file formats, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.candidates import candidate_metrics, read_candidates, read_ground_truth
from core.errors import DataError

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hand_computed_two_users(tmp_path):
    cand = _write(tmp_path / "c.jsonl", [
        {"user_id": "u1", "results": [{"item_id": "a"}, {"item_id": "[PAD]"}, {"item_id": "b"}]},
        {"user_id": "u2", "items": ["x", "y", "z"]},
    ])
    gt = _write(tmp_path / "g.jsonl", [{"user_id": "u1", "item_id": "b"}, {"user_id": "u1", "item_id": "q"},
                                       {"user_id": "u2", "item_ids": ["x"]}, {"user_id": "u3", "item_id": "x"}])
    res = candidate_metrics(read_candidates(cand), read_ground_truth(gt), [1, 3])
    # u1: relevant {b, q}; b at rank 3 (the [PAD] slot is a miss). u2: x at rank 1. u3: no list.
    ndcg3_u1 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert res["NDCG@3"] == pytest.approx((ndcg3_u1 + 1.0 + 0.0) / 3)
    assert res["HR@1"] == pytest.approx(1 / 3)
    assert res["Recall@3"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert res["Precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 3)
    assert res["MRR"] == pytest.approx((1 / 3 + 1.0) / 3)
    assert res["users_without_list"] == 1


@pytest.mark.parametrize("line, needle", [
    ("{not json", "malformed JSON"),
    ('{"results": []}', "'user_id'"),
    ('{"user_id": "u", "ranked": []}', "'results' or 'items'"),
    ('[1, 2]', "JSON object"),
])
def test_bad_candidate_files_name_file_and_line(tmp_path, line, needle):
    p = tmp_path / "c.jsonl"
    p.write_text('{"user_id": "ok", "items": []}\n' + line + "\n")
    with pytest.raises(DataError, match=needle) as err:
        read_candidates(p)
    assert f"{p}:2" in str(err.value)


def test_empty_file_is_an_error(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n")
    with pytest.raises(DataError, match="empty file"):
        read_ground_truth(p)


def test_cli_on_persona4rec_examples(shared_data, tmp_path):
    base = shared_data / "persona4rec" / "evaluation" / "amazon"
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "core.candidates", "--candidates", str(base / "candidate.jsonl"),
                           "--gt", str(base / "gt.jsonl"), "--ks", "5,10,20", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["users"] == 46 and res["users_without_list"] == 0
    assert 0 < res["NDCG@10"] <= res["HR@10"] <= res["HR@20"] <= 1

"""``distillation.evaluation``: top-K export in ``core.candidates``' format (history masked, raw
ids, all users or a list) whose metrics equal the evaluator's, evaluation of a checkpoint on
other prepared data sharing the item map, and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import run
from core.data.sequences import SequenceData
from core.store import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs/distillation/sasrec.yaml")
N_ITEMS = 15


def _sequences(n_users: int, seed: int) -> list[list[int]]:
    """Distinct items per user (no target repeats its history) with a successor pattern to learn."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        start, length = int(rng.integers(1, N_ITEMS + 1)), int(rng.integers(3, 8))
        out.append([(start + 2 * j - 1) % N_ITEMS + 1 if j else start for j in range(length)])
        out[-1] = list(dict.fromkeys(out[-1]))
        while len(out[-1]) < 3:
            out[-1].append(next(i for i in range(1, N_ITEMS + 1) if i not in out[-1]))
    return out


def _save(folder: Path, seqs, user_prefix: str, item_ids) -> Path:
    SequenceData.from_lists(seqs, N_ITEMS, [f"{user_prefix}{n}" for n in range(len(seqs))], item_ids).save(folder)
    return folder


ITEM_IDS = [f"i{n}" for n in range(1, N_ITEMS + 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from distillation.training import main as train_main

    root = tmp_path_factory.mktemp("export")
    data = _save(root / "tiny", _sequences(30, 0), "u", ITEM_IDS)
    over = (f"home={root / 'home'},data.dataset={data},device=cpu,epochs=1,hidden_units=16,num_blocks=1,maxlen=10,"
            "batch_size=16,eval.sampled=[],eval_every=1,run_name=t")
    with pytest.raises(SystemExit) as exc:
        run(train_main, ["--config", CONFIG, "--override", over])
    assert exc.value.code == 0
    ckpt = next((root / "home").glob("distillation/*/t/best.pt"))
    return root, data, ckpt, over


def _eval(argv, capsys):
    from distillation.evaluation import main

    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _base(trained) -> list[str]:
    root, data, ckpt, over = trained
    return ["--model-path", str(ckpt), "--config", CONFIG, "--override", over]


def test_exported_lists_score_like_the_evaluator_and_match_a_hand_ranking(trained, tmp_path, capsys):
    from core.candidates.__main__ import main as cand_main

    root, data, ckpt, _ = trained
    out, gt, metrics = tmp_path / "top5.jsonl", tmp_path / "gt.jsonl", tmp_path / "m.json"
    code, _, err = _eval(_base(trained) + ["--export-topk", "5", "--out", str(out), "--gt", str(gt)], capsys)
    assert code == 0, err
    code, _, err = _eval(_base(trained) + ["--output", str(metrics), "--override", "eval.ks=[1,5,10]"], capsys)
    assert code == 0, err
    evaluator = json.loads(metrics.read_text())["test"]
    with pytest.raises(SystemExit) as exc:  # the shared evaluator reads the export as it is
        run(cand_main, ["--candidates", str(out), "--gt", str(gt), "--ks", "1,5", "--output", str(tmp_path / "c.json")])
    assert exc.value.code == 0
    lists = json.loads((tmp_path / "c.json").read_text())
    for key in ("HR@1", "HR@5", "NDCG@5", "Recall@5"):
        assert lists[key] == pytest.approx(evaluator[key], abs=1e-6), key
    assert lists["users"] == 30 and lists["users_without_list"] == 0
    # by hand: the model's scores after each user's history (all but the last item), history masked
    from core.models import build_model

    seqs = SequenceData.load(data)
    state = torch.load(ckpt, weights_only=True)
    model = build_model(state["kind"], **state["model_args"])
    model.load_state_dict(state["model_state"])
    model.eval()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == [f"u{n}" for n in range(30)]
    for n, row in enumerate(rows):
        hist = seqs.sequence(n + 1)[:-1].tolist()
        inputs = torch.tensor([([0] * 10 + hist)[-10:]])
        with torch.no_grad():
            scores = model.full_scores(inputs)[0]
        scores[[0, *hist]] = -float("inf")
        expect = [ITEM_IDS[i - 1] for i in torch.argsort(scores, descending=True)[:5].tolist()]
        assert [r["item_id"] for r in row["results"]] == expect, n
        assert not {ITEM_IDS[i - 1] for i in hist} & {r["item_id"] for r in row["results"]}
    assert [json.loads(line) for line in gt.read_text().splitlines()][3] == {
        "user_id": "u3", "item_id": ITEM_IDS[int(seqs.sequence(4)[-1]) - 1]}


def test_export_for_a_user_list_and_after_the_whole_sequence(trained, tmp_path, capsys):
    root, data, ckpt, _ = trained
    users = tmp_path / "users.txt"
    users.write_text("# picked\nu7\n\nu2\n")
    code, _, err = _eval(_base(trained) + ["--export-topk", "3", "--users", str(users), "--position", "next",
                                           "--out", str(tmp_path / "n.jsonl")], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "n.jsonl").read_text().splitlines()]
    seqs = SequenceData.load(data)
    assert [r["user_id"] for r in rows] == ["u7", "u2"]
    for row, u in zip(rows, (8, 3)):  # the whole sequence, last item included, is masked
        assert len(row["results"]) == 3
        assert not {ITEM_IDS[i - 1] for i in seqs.sequence(u).tolist()} & {r["item_id"] for r in row["results"]}
    # default output: beside the checkpoint
    code, _, err = _eval(_base(trained) + ["--export-topk", "2"], capsys)
    assert code == 0 and (ckpt.parent / "top2.jsonl").is_file(), err


def test_evaluate_on_other_data_sharing_the_item_map(trained, tmp_path, capsys):
    root, data, ckpt, _ = trained
    other = _save(tmp_path / "new-users", _sequences(12, 5), "new", ITEM_IDS)
    code, out, err = _eval(_base(trained) + ["--data", str(other), "--output", str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    assert "NDCG@10" in out and json.loads((tmp_path / "m.json").read_text())["test"]["HR@20"] == 1.0  # 15 items
    code, _, err = _eval(_base(trained) + ["--data", str(other), "--export-topk", "4", "--out", str(tmp_path / "o.jsonl")],
                         capsys)
    assert code == 0, err
    assert [json.loads(line)["user_id"] for line in (tmp_path / "o.jsonl").read_text().splitlines()] == \
        [f"new{n}" for n in range(12)]


def test_checkpoint_without_an_item_map_compares_with_its_training_folder(trained, tmp_path, capsys):
    root, data, ckpt, over = trained
    state = torch.load(ckpt, weights_only=True)
    state.pop("item_map")
    old = tmp_path / "old.pt"
    torch.save(state, old)
    other = _save(tmp_path / "new-users", _sequences(12, 5), "new", ITEM_IDS)
    argv = ["--model-path", str(old), "--config", CONFIG, "--override", over, "--data", str(other)]
    code, _, err = _eval(argv, capsys)
    assert code == 0, err
    state["config"]["data"]["dataset"] = str(tmp_path / "moved-away")
    torch.save(state, old)
    code, _, err = _eval(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "carries no item id map" in lines[0] and "moved-away" in lines[0]


def _bad_cases(tmp_path: Path):
    users = tmp_path / "users.txt"
    users.write_text("u1\nnobody\n")
    twice = tmp_path / "twice.txt"
    twice.write_text("u1\nu4\nu1\n")
    permuted = _save(tmp_path / "permuted", _sequences(12, 5), "new", ITEM_IDS[::-1])
    smaller = tmp_path / "smaller"
    SequenceData.from_lists([[1, 2, 3]], 3, ["a"], ITEM_IDS[:3]).save(smaller)
    return [
        (["--export-topk", "0"], "--export-topk must be >= 1, got 0"),
        (["--export-topk", "16"], "--export-topk 16 exceeds the catalog (15 items)"),
        (["--export-topk", "5", "--users", str(users)], f"{users}:2: user 'nobody' is not in this dataset's user_ids.json"),
        (["--export-topk", "5", "--users", str(twice)], f"{twice}:3: user 'u1' is listed twice (line 1)"),
        (["--export-topk", "5", "--users", str(tmp_path / "none.txt")], "none.txt: users file not found"),
        (["--users", str(users)], "--users is only read with --export-topk K"),
        (["--export-topk", "5", "--position", "next", "--gt", str(tmp_path / "g")], "--gt with --position next"),
        (["--data", str(permuted)], "permuted/item_ids.json maps item ids to other rows than the checkpoint"),
        (["--data", str(smaller)], "smaller/item_ids.json maps item ids to other rows"),
        (["--data", str(tmp_path / "nowhere")], "nowhere: not a prepared dataset folder (no meta.json)"),
    ]


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys):
    out = tmp_path / "never.jsonl"
    for extra, message in _bad_cases(tmp_path):
        code, _, err = _eval(_base(trained) + extra + (["--out", str(out)] if "--export-topk" in extra else []), capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (extra, err)
        assert message in lines[0], (message, lines[0])
        assert not out.exists()

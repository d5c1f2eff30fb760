"""Preparers (core.data.prepare) and the plain-data pickle loader (core.data.safe_pickle).

(a) small generated files for every input format, bad input through the CLI;
(b) real data from ../shared/data with the published counts (skipped when absent).
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.data.prepare import default_out, food_kitchen, movielens, recbole, sasrec_txt, seq_lines
from core.data.prepare.__main__ import PREPARERS, main
from core.data.prepare.common import write_prepared
from core.data.safe_pickle import load_plain_pickle
from core.data.sequences import SequenceData
from core.errors import DataError
from core.store import REPO_ROOT


def seqs(data: SequenceData) -> dict:
    """raw user id -> list of raw item ids, in sequence order."""
    return {
        data.user_ids[u - 1]: [data.item_ids[i - 1] for i in data.sequence(u).tolist()]
        for u in range(1, data.n_users + 1)
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.data.prepare", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


# =========================================================================== safe_pickle
class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_safe_pickle_loads_plain_data(tmp_path):
    obj = {0: [1, 2, 3], 1: [], "k": ("a", 1.5, None, True, b"x"), 2: {4, 5}}
    p = tmp_path / "ok.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=4))
    assert load_plain_pickle(p) == obj


@pytest.mark.parametrize("payload, refused", [
    (os.system, "system"),                  # a bare reference to a function
    (Evil(), "system"),                     # __reduce__ that would call os.system
    (Path("x"), "pathlib"),                 # an ordinary class instance
])
def test_safe_pickle_refuses_globals(tmp_path, monkeypatch, payload, refused):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "bad.pkl"
    p.write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError) as exc:
        load_plain_pickle(p)
    msg = str(exc.value)
    assert str(p) in msg and "refused global" in msg and refused in msg
    assert not (tmp_path / "pwned_marker").exists()


def test_safe_pickle_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_plain_pickle(tmp_path / "missing.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_plain_pickle(tmp_path / "empty.pkl")
    (tmp_path / "trunc.pkl").write_bytes(pickle.dumps({1: [1, 2, 3]})[:-5])
    with pytest.raises(DataError, match="trunc.pkl"):
        load_plain_pickle(tmp_path / "trunc.pkl")
    (tmp_path / "text.pkl").write_text("user item\n1 2\n")
    with pytest.raises(DataError, match="text.pkl"):
        load_plain_pickle(tmp_path / "text.pkl")


# =========================================================================== movielens
def write_ml1m(folder: Path, ratings: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # user 2's items 30 and 10 tie at t=100: file order (30 first) must be kept
    (folder / "ratings.dat").write_text(ratings if ratings is not None else (
        "2::30::5::100\n"
        "1::20::3::300\n"
        "2::10::4::100\n"
        "1::10::5::200\n"
        "2::20::1::50\n"
        "3::20::2::10\n"
    ), encoding="latin-1")
    (folder / "movies.dat").write_bytes(
        "10::Misérables, Les (1995)::Drama|Musical\n"
        "20::Toy Story (1995)::Animation|Children's|Comedy\n"
        "30::Seven (Se7en) (1995)::Crime|Thriller\n"
        "40::Never Rated (2000)::Drama\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117-1234\n")
    return folder


def test_movielens_1m_format(tmp_path):
    src = write_ml1m(tmp_path / "ml-1m")
    p = movielens.load(src, out=tmp_path / "out")
    d = p.data
    assert p.name == "ml-1m" and p.extra_meta["variant"] == "ml-1m"
    assert (d.n_users, d.n_items, d.n_interactions) == (3, 3, 6)
    assert d.user_ids == [1, 2, 3] and d.item_ids == [10, 20, 30]  # raw ids as ints
    assert seqs(d) == {1: [10, 20], 2: [20, 30, 10], 3: [20]}
    assert d.timestamps.tolist() == [200, 300, 50, 100, 100, 10]
    assert p.item_side["10"] == {"title": "Misérables, Les", "year": 1995, "genres": ["Drama", "Musical"]}
    assert p.item_side["30"]["title"] == "Seven (Se7en)"
    assert "40" not in p.item_side  # side info only for items in the dataset
    assert p.user_side["3"] == {"gender": "M", "age": 25, "occupation": 15, "zip": "55117-1234"}

    out = write_prepared(p)
    loaded = SequenceData.load(out)
    assert seqs(loaded) == seqs(d)
    assert loaded.item_side(out)["10"]["title"] == "Misérables, Les"
    assert loaded.user_side(out)["1"]["gender"] == "F"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == "ml-1m" and meta["preparer"] == "movielens" and meta["notes"]
    assert set(meta["source_sha256"]) == {"ratings.dat", "movies.dat", "users.dat"}


def test_movielens_min_count_is_iterative(tmp_path):
    # item 30 has 1 rating -> dropped -> user 3 falls to 1 rating -> dropped -> item 20 falls to 2 ...
    rows = ["1::10::5::1", "1::20::5::2", "2::10::5::3", "2::20::5::4", "3::20::5::5", "3::30::5::6"]
    src = write_ml1m(tmp_path / "ml", "\n".join(rows) + "\n")
    d = movielens.load(src, min_count=2).data
    assert seqs(d) == {1: [10, 20], 2: [10, 20]}
    assert d.item_ids == [10, 20]
    with pytest.raises(DataError, match="min-count"):
        movielens.load(src, min_count=5)


def test_movielens_100k_format(tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    (src / "u.data").write_text("2\t1\t3\t20\n1\t2\t4\t10\n1\t1\t5\t10\n2\t3\t1\t5\n")
    flags = ["0"] * 19
    f1, f2, f3 = list(flags), list(flags), list(flags)
    f1[3] = f1[5] = "1"     # Animation, Comedy
    f2[0] = "1"             # unknown
    f3[8] = "1"             # Drama
    (src / "u.item").write_bytes("\n".join([
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(f1),
        "2|unknown||||" + "|".join(f2),
        "3|Misérables, Les (1995)|01-Jan-1995||http://y|" + "|".join(f3),
    ]).encode("latin-1") + b"\n")
    (src / "u.genre").write_text("\n".join(f"{g}|{i}" for i, g in enumerate(movielens.ML100K_GENRES)) + "\n\n")
    (src / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    p = movielens.load(src / "u.data")  # the ratings file itself is accepted too
    d = p.data
    assert p.name == "ml-100k"
    assert seqs(d) == {1: [2, 1], 2: [3, 1]}  # tie at t=10 keeps file order (2 before 1)
    assert p.item_side["1"]["genres"] == ["Animation", "Comedy"] and p.item_side["1"]["year"] == 1995
    assert p.item_side["2"] == {"title": "unknown", "year": None, "genres": ["unknown"], "release_date": None}
    assert p.item_side["3"]["title"] == "Misérables, Les"
    assert p.user_side["2"] == {"gender": "F", "age": 53, "occupation": "other", "zip": "T8H1N"}


def test_movielens_without_side_files(tmp_path):
    src = tmp_path / "ml"
    src.mkdir()
    (src / "u.data").write_text("1\t1\t3\t20\n")
    p = movielens.load(src, name="tiny", out=tmp_path / "out")
    assert p.item_side is None and p.user_side is None and p.name == "tiny"
    out = write_prepared(p)
    assert not (out / "item_side.json").exists()


# =========================================================================== seq-lines / sasrec-txt
def test_seq_lines(tmp_path):
    f = tmp_path / "Sports_and_Outdoors.txt"
    f.write_text("1 5 6 7\n2 6 5\n\n3\n4 9 5 9\n")
    p = seq_lines.load(f)
    assert p.name == "sports"
    d = p.data
    assert seqs(d) == {1: [5, 6, 7], 2: [6, 5], 4: [9, 5, 9]}  # user 3 (no items) dropped
    assert d.item_ids == [5, 6, 7, 9] and d.timestamps is None
    assert any("dropped 1" in n for n in p.notes)
    g = tmp_path / "My-Set.txt"
    g.write_text("7 1 2\n")
    assert seq_lines.load(g).name == "my-set"


def test_seq_lines_duplicate_user(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("1 5 6\n2 6\n1 7\n")
    with pytest.raises(DataError, match=r"x\.txt:3: user 1 already has a line \(1\)"):
        seq_lines.load(f)


def test_sasrec_txt_keeps_file_order_and_repeats(tmp_path):
    f = tmp_path / "Wiki.txt"
    f.write_text("1 3\n1 1\n2 2\n1 3\n2 1\n")
    p = sasrec_txt.load(f)
    assert p.name == "wiki"
    assert seqs(p.data) == {1: [3, 1, 3], 2: [2, 1]}


# =========================================================================== recbole
def test_recbole_with_timestamp(tmp_path):
    f = tmp_path / "toy.inter"
    f.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\tA\t5\t30.5\n"
        "u2\tB\t4\t10\n"
        "u1\tB\t3\t10.9\n"
        "u1\tC\t3\t10.9\n"   # ties 10.9 with B: file order
        "u2\tA\t1\t5\n"
    )
    p = recbole.load(f)
    d = p.data
    assert p.name == "toy"
    assert d.user_ids == ["u1", "u2"] and d.item_ids == ["A", "B", "C"]  # string tokens, first sight
    assert seqs(d) == {"u1": ["B", "C", "A"], "u2": ["A", "B"]}
    assert d.timestamps.tolist() == [10, 10, 30, 5, 10]


def test_recbole_without_timestamp_int_ids(tmp_path):
    f = tmp_path / "t.inter"
    f.write_text("session_id:token\titem_id:token\n10\t3\n2\t1\n10\t2\n10\t1\n")
    p = recbole.load(f, user_field="session_id")
    assert p.data.user_ids == [2, 10] and p.data.item_ids == [1, 2, 3]  # canonical ints, sorted
    assert seqs(p.data) == {2: [1], 10: [3, 2, 1]}
    assert p.data.timestamps is None


@pytest.mark.parametrize("text, match", [
    ("user_id\titem_id\n1\t2\n", r"t\.inter:1: malformed header field 'user_id'"),
    ("user_id:token\titem_id:integer\n1\t2\n", r"t\.inter:1: malformed header"),
    ("user_id:token\trating:float\n1\t2\n", r"t\.inter:1: header has no 'item_id' column"),
    ("user_id:token\titem_id:token\n1\t2\n3\n", r"t\.inter:3: expected 2 tab-separated fields"),
    ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n", r"t\.inter:2: timestamp 'noon'"),
    ("user_id:token\titem_id:token\n", r"header only"),
])
def test_recbole_bad_input(tmp_path, text, match):
    f = tmp_path / "t.inter"
    f.write_text(text)
    with pytest.raises(DataError, match=match):
        recbole.load(f)


# =========================================================================== food-kitchen
def write_food_kitchen(folder: Path, override: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    k0 = food_kitchen.N_FOOD  # first kitchen raw id
    base = {
        "food_all": {0: [0, 5, 7], 1: [5, 29206], 2: [7]},
        "food_train": {0: [0], 1: [], 2: [7]},
        "kitchen_all": {0: [k0], 1: [k0 + 1, 64092], 2: [k0]},
        "kitchen_train": {0: [k0], 1: [k0 + 1], 2: [k0]},
        "cross_f_train": {0: [0, k0], 1: [k0 + 1, 64092], 2: [7, k0]},
        "cross_k_train": {0: [0, 5, 7, k0], 1: [5, 29206, k0 + 1], 2: [7, k0]},
    }
    for stem, obj in {**base, **(override or {})}.items():
        (folder / f"{stem}.pkl").write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=4))
    return folder


def test_food_kitchen_small(tmp_path):
    src = write_food_kitchen(tmp_path / "fk")
    prepared = food_kitchen.load(src, out=tmp_path / "out")
    assert [p.out.name for p in prepared] == list(food_kitchen.STEMS)
    by = {p.out.name: p for p in prepared}
    d = by["food_all"].data
    assert d.n_items == 64093 and len(d.item_ids) == 64093 and d.item_ids[0] == 0 and d.item_ids[-1] == 64092
    assert d.sequence(1).tolist() == [1, 6, 8]            # raw 0 -> index 1
    assert d.sequence(2).tolist() == [6, 29207]
    assert by["food_train"].data.user_ids == [0, 2]      # empty sequence dropped
    dom = d.item_domain
    assert dom.dtype == np.int8 and len(dom) == 64094
    assert dom[0] == -1 and dom[1] == 0 and dom[29207] == 0 and dom[29208] == 1 and dom[64093] == 1
    assert by["kitchen_all"].data.sequence(2).tolist() == [29209, 64093]
    out = write_prepared(by["cross_k_train"])
    loaded = SequenceData.load(out)
    assert loaded.meta["domains"] == ["food", "kitchen"] and loaded.meta["item_shift"] == 1
    assert loaded.item_domain.tolist() == dom.tolist()
    assert any("+1" in n for n in loaded.meta["notes"])


@pytest.mark.parametrize("override, match", [
    ({"food_all": [1, 2]}, r"food_all\.pkl: expected a dict"),
    ({"kitchen_train": {0: [70000]}}, r"kitchen_train\.pkl: user 0: item id 70000 is outside"),
    ({"cross_f_train": {0: [1.5]}}, r"cross_f_train\.pkl: user 0: item 1\.5 is not an integer"),
    ({"food_train": {"a": [1]}}, r"food_train\.pkl: user key 'a'"),
])
def test_food_kitchen_bad_pickles(tmp_path, override, match):
    src = write_food_kitchen(tmp_path / "fk", override)
    with pytest.raises(DataError, match=match):
        food_kitchen.load(src, out=tmp_path / "out")


def test_food_kitchen_missing_pickle(tmp_path):
    src = write_food_kitchen(tmp_path / "fk")
    (src / "cross_k_train.pkl").unlink()
    with pytest.raises(DataError, match=r"cross_k_train\.pkl: Food-Kitchen pickle not found"):
        food_kitchen.load(src)


# =========================================================================== CLI
def test_registry_and_default_out():
    assert set(PREPARERS) >= {"movielens", "seq-lines", "sasrec-txt", "food-kitchen", "recbole"}
    assert default_out("beauty") == REPO_ROOT / "data" / "beauty"


def test_cli_in_process_and_rewrite(tmp_path, capsys):
    src = write_ml1m(tmp_path / "ml-1m")
    out = tmp_path / "out"
    assert main(["movielens", "--path", str(src), "--out", str(out)]) == 0
    line, repeats = capsys.readouterr().out.strip().splitlines()
    assert line == f"prepared ml-1m: 3 users, 3 items, 6 interactions -> {out}"
    assert repeats == "  repeat targets: 0.0% of test, 0.0% of valid"
    assert (out / "item_side.json").exists()
    # preparing again without side files removes the stale side info
    (src / "movies.dat").unlink()
    (src / "users.dat").unlink()
    assert main(["movielens", "--path", str(src), "--out", str(out)]) == 0
    assert not (out / "item_side.json").exists() and not (out / "user_side.json").exists()
    assert SequenceData.load(out).n_interactions == 6


def test_cli_subprocess_ok(tmp_path):
    src = write_food_kitchen(tmp_path / "fk")
    out = tmp_path / "out"
    r = cli("food-kitchen", "--path", src, "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "shifted by +1" in lines[0]
    assert lines[1] == f"prepared food-kitchen/food_all: 3 users, 64093 items, 6 interactions -> {out / 'food_all'}"
    assert sum(x.startswith("prepared ") for x in lines) == 6  # (+ a repeat-targets line where users have 3 items)
    for stem in food_kitchen.STEMS:
        assert (out / stem / "meta.json").is_file()


def _bad_cases(tmp: Path) -> list[tuple[list, str]]:
    """(cli args, text the error line must contain); files are created under ``tmp``."""
    cases = []
    cases.append((["seq-lines", "--path", tmp / "nope.txt"], f"{tmp / 'nope.txt'}: sequence file not found"))
    (tmp / "empty.txt").write_text("\n\n")
    cases.append((["sasrec-txt", "--path", tmp / "empty.txt"], f"{tmp / 'empty.txt'}: file is empty"))
    ml = write_ml1m(tmp / "ml", "1::10::5::100\n2::10::5\n")
    cases.append((["movielens", "--path", ml], f"{ml / 'ratings.dat'}:2: expected 4 fields"))
    write_ml1m(tmp / "ml2", "1::10::5::100\n2::x10::5::7\n")
    cases.append((["movielens", "--path", tmp / "ml2"], f"{tmp / 'ml2' / 'ratings.dat'}:2: item id 'x10' is not an integer"))
    ml3 = write_ml1m(tmp / "ml3")
    (ml3 / "movies.dat").write_text("10::Only Two Fields\n")
    cases.append((["movielens", "--path", ml3], f"{ml3 / 'movies.dat'}:1: expected 3 fields"))
    (tmp / "s.txt").write_text("1 2 3\n2 4 five\n")
    cases.append((["seq-lines", "--path", tmp / "s.txt"], f"{tmp / 's.txt'}:2: item id 'five' is not an integer"))
    (tmp / "w.txt").write_text("1 2\n1 2 3\n")
    cases.append((["sasrec-txt", "--path", tmp / "w.txt"], f"{tmp / 'w.txt'}:2: expected 2 fields"))
    (tmp / "h.inter").write_text("user_id:token item_id:token\n1 2\n")
    cases.append((["recbole", "--path", tmp / "h.inter"], f"{tmp / 'h.inter'}:1: malformed header"))
    fk = write_food_kitchen(tmp / "fk", {"food_train": pickle.dumps(Evil())})
    cases.append((["food-kitchen", "--path", fk], f"{fk / 'food_train.pkl'}: not loaded as a plain pickle (refused global"))
    cases.append((["movielens", "--path", tmp / "fk"], "no ratings.dat (MovieLens 1M) or u.data"))
    return cases


def test_cli_bad_input(tmp_path):
    """Each bad input: exit 2, one `error:` line naming the file (and line), no output folder."""
    cases = _bad_cases(tmp_path)
    procs = []
    for i, (args, expected) in enumerate(cases):  # started together: interpreter start-up dominates
        out = tmp_path / f"out{i}"
        argv = [sys.executable, "-m", "core.data.prepare", *map(str, args), "--out", str(out)]
        procs.append((args, expected, out, subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for args, expected, out, proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, stdout, stderr)
        err = stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (args, stderr)
        assert expected in err[0], (expected, err[0])
        assert stdout == ""
        assert not out.exists(), args
    assert not (tmp_path / "pwned_marker").exists() and not (REPO_ROOT / "pwned_marker").exists()


def test_cli_bad_name(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("1 2\n")
    r = cli("seq-lines", "--path", f, "--name", "../escape", "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.startswith("error: invalid dataset name '../escape'")
    assert not (tmp_path / "o").exists()


# =========================================================================== real data
def need(shared_data: Path, rel: str) -> Path:
    p = shared_data / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def test_real_ml100k(shared_data, tmp_path):
    src = need(shared_data, "ml-100k/u.data").parent
    p = movielens.load(src, out=tmp_path / "ml-100k")
    d = p.data
    assert (d.n_users, d.n_items, d.n_interactions) == (943, 1682, 100000)
    assert d.user_ids == list(range(1, 944)) and d.item_ids == list(range(1, 1683))
    assert all(np.all(np.diff(d.timestamps[d.offsets[u]:d.offsets[u + 1]]) >= 0) for u in range(d.n_users))
    assert len(p.item_side) == 1682 and len(p.user_side) == 943
    assert p.item_side["1"]["title"] == "Toy Story" and "Animation" in p.item_side["1"]["genres"]
    assert any("é" in v["title"] for v in p.item_side.values())  # Latin-1 decoded
    loaded = SequenceData.load(write_prepared(p))
    assert loaded.n_interactions == 100000 and loaded.fingerprint() == d.fingerprint()


@pytest.mark.parametrize("fname, name, counts", [
    ("Beauty.txt", "beauty", (22363, 12101, 198502)),
    ("Sports_and_Outdoors.txt", "sports", (35598, 18357, 296337)),
    ("Toys_and_Games.txt", "toys", (19412, 11924, 167597)),
])
def test_real_amazon_seq(shared_data, tmp_path, fname, name, counts):
    f = need(shared_data, f"amazon-seq/{fname}")
    p = seq_lines.load(f, out=tmp_path / name)
    d = p.data
    assert p.name == name
    assert (d.n_users, d.n_items, d.n_interactions) == counts
    # ids are 1-based contiguous, so index == raw id; line 1 of Beauty is "1 1 2 3 4 5"
    assert d.item_ids == list(range(1, counts[1] + 1)) and d.user_ids == list(range(1, counts[0] + 1))
    first = f.open().readline().split()
    assert d.sequence(1).tolist() == [int(x) for x in first[1:]]
    write_prepared(p)
    assert SequenceData.load(tmp_path / name).n_users == counts[0]


def test_real_sasrec_wikipedia(shared_data, tmp_path):
    f = need(shared_data, "sasrec/wikipedia.txt")
    p = sasrec_txt.load(f, out=tmp_path / "wikipedia")
    d = p.data
    assert p.name == "wikipedia"
    assert (d.n_users, d.n_items, d.n_interactions) == (8227, 1000, 157474)
    write_prepared(p)


def test_real_food_kitchen(shared_data, tmp_path):
    src = need(shared_data, "food-kitchen/food_all.pkl").parent
    prepared = food_kitchen.load(src, out=tmp_path / "fk")
    expected = {"food_all": 234986, "food_train": 166752, "kitchen_all": 218539,
                "kitchen_train": 150305, "cross_f_train": 385291, "cross_k_train": 385291}
    for p in prepared:
        stem = p.out.name
        d = p.data
        assert d.n_users == 34117 and d.user_ids == list(range(34117)), stem
        assert d.n_items == 64093 and d.n_interactions == expected[stem], stem
        raw = load_plain_pickle(src / f"{stem}.pkl")
        flat = np.fromiter((i for u in range(34117) for i in raw[u]), dtype=np.int64)
        assert np.array_equal(d.items, flat + 1), stem  # item 0 -> index 1, order kept
        dom = d.item_domain[d.items]
        if stem.startswith("food"):
            assert (dom == 0).all()
        elif stem.startswith("kitchen"):
            assert (dom == 1).all()
    food_all = prepared[0].data
    assert 1 in set(food_all.items.tolist())  # raw item 0 occurs in food_all, now index 1
    out = write_prepared(prepared[0])
    assert SequenceData.load(out).meta["domains"] == ["food", "kitchen"]

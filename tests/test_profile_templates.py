"""distillation.profiles templates: richer texts and one aspect per file (several profiles per user)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.data.sequences import SequenceData
from core.errors import ConfigError
from distillation.profiles import parse_args, profile_text


class _Data:
    """What ``profile_text`` reads of a SequenceData: the raw item ids."""
    item_ids = np.array([10, 20, 30, 40, 50, 60, 70])


SIDE = {"10": {"title": "Alpha", "year": 1995, "genres": ["Drama"]},
        "20": {"title": "Beta", "year": 1994, "genres": ["Drama", "War"]},
        "30": {"title": "Gamma", "year": 1981, "genres": ["Comedy"]},
        "40": {"title": "Delta", "year": 1996, "genres": ["Drama"]},
        "50": {"title": "Eps", "year": 1983, "genres": ["Comedy"]},
        "60": {"title": "Zeta", "year": 1997, "genres": ["Comedy"]},
        "70": {"title": "Eta", "year": 1970, "genres": ["Horror"]}}
USER = {"age": 30, "gender": "F", "occupation": "writer"}
HISTORY = [1, 2, 3, 4, 5, 6, 7]  # internal ids 1..7 = raw 10..70, oldest first
RATINGS = np.array([5, 4, 1, 5, 2, 3, 1], dtype=float)


def text(template: str, ratings=RATINGS, user=USER) -> str:
    return profile_text(HISTORY, _Data(), SIDE, user, ratings, template)


def test_rich_holds_every_aspect_and_the_aspects_split_it():
    rich = text("rich")
    taste, recent, loved = text("taste"), text("recent"), text("loved")
    assert rich == " ".join((taste, recent, loved))
    # taste: who, per-genre shares, decades, per-genre ratings over genres with >= 3 items
    assert taste.startswith("A 30-year-old woman writer. 7 interactions in the history.")
    assert "Favourite genres: Drama (43%), Comedy (43%)" in taste
    assert "Rates highest: Drama 4.7; lowest: Comedy 2.0." in taste
    assert "Films by decade: 1990s (57%), 1980s (29%), 1970s (14%)." in taste
    # recent: the last five titles, newest first, then the disliked (<= 2 stars, lowest first, newest first)
    assert recent == ("Most recently: Eta (1970); Zeta (1997); Eps (1983); Delta (1996); Gamma (1981). "
                      "Disliked: Eta (1970); Gamma (1981); Eps (1983).")
    # loved: >= 4 stars, highest first, newest first among equals
    assert loved == "Loved: Delta (1996); Alpha (1995); Beta (1994)."


def test_aspects_without_ratings_or_side_information():
    loved = text("loved", ratings=None)
    assert loved == "Earlier: Beta (1994); Alpha (1995)."  # the titles before the five most recent
    assert "Average rating" not in text("taste", ratings=None) and "Disliked" not in text("recent", ratings=None)
    assert text("taste", user=None).startswith("7 interactions")
    no_dislikes = text("recent", ratings=np.full(7, 4.0))
    assert no_dislikes.endswith("Gamma (1981).") and "Disliked" not in no_dislikes


def test_full_template_is_the_default():
    assert text("full") == profile_text(HISTORY, _Data(), SIDE, USER, RATINGS)
    assert "Loved: Delta (1996); Alpha (1995); Beta (1994). Disliked:" in text("full")


def test_template_key_is_checked():
    assert parse_args(["--dataset", "x", "--template", "loved"]).template == "loved"
    assert parse_args(["--dataset", "x", "--override", "template=rich"]).template == "rich"
    with pytest.raises(ConfigError, match="template 'poem'"):
        parse_args(["--dataset", "x", "--override", "template=poem"])
    with pytest.raises(ConfigError, match="does not apply to texts"):
        parse_args(["--dataset", "x", "--texts", "t.json", "--template", "rich"])
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "x", "--template", "poem"])


def test_cli_writes_one_file_per_template_next_to_the_shipped_one(tmp_path, monkeypatch):
    import distillation.profiles as profiles

    data = SequenceData.load(_synthetic(tmp_path))
    monkeypatch.setattr("core.text.encode_texts", lambda texts, **kw: np.ones((len(texts), 4), np.float32)
                        * np.array([len(t) for t in texts], np.float32)[:, None])
    out = tmp_path / "out"
    for template in ("full", "taste"):
        assert profiles.main(["--dataset", str(tmp_path / "synthetic-a"), "--out", str(out), "--template", template]) == 0
    shipped, taste = (json.loads((out / name).read_text()) for name in ("profiles.json", "profiles-taste.json"))
    assert set(shipped) == set(taste) == {str(u) for u in data.user_ids}
    texts = json.loads((out / "profile_texts-taste.json").read_text())
    assert all("Loved" not in t and "Recently" not in t for t in texts.values())
    assert (out / "profile_texts.json").is_file()


def _synthetic(root):
    from core.seqrec import DataConfig, load_dataset

    _, folder = load_dataset(DataConfig(dataset="synthetic-a", data_root=str(root)))
    return folder

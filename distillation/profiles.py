"""User profiles for distillation: written from training data, encoded, saved as the seed's JSON.

    python -m distillation.profiles --dataset ml-100k                 # text profiles -> MiniLM -> JSON
    python -m distillation.profiles --dataset ml-100k --dim 128       # + PCA to 128 dims (the seed's size)
    python -m distillation.profiles --dataset ml-100k --template taste   # one aspect: profiles-taste.json
    python -m distillation.profiles --dataset beauty --texts llm_profiles.jsonl   # texts from any LLM
    python -m distillation.profiles --dataset ml-100k --embeddings users.npy      # vectors of another pipeline
    python -m distillation.profiles --config configs/distillation/profiles/ml-100k.yaml [--override "dim=64"]

Every flag is also a key of ``ProfilesConfig`` (``--config`` file <- ``--override`` <- the flags).

No LLM is reachable here, so the default profile is a templated text built from each
user's *training* interactions only (never the validation or test items) plus side
information: for MovieLens the user's age, gender and occupation, favourite genres and
decades, and the titles they rated highest and lowest. ``--template rich`` says more (six genres,
the genres rated highest and lowest, the five latest titles, fifteen loved ones); ``taste``,
``recent`` and ``loved`` are its three aspects alone, one file each, which
``distill.multi_profile`` reads as several profiles per user. Output (``--out``, default
``state_dict/embeddings/distillation/<dataset>/``): ``profiles[-<template>][-<dim>].json``
(``{user_id: [floats]}``) and ``profile_texts[-<template>].json`` beside it, for people to read.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import store
from core.data.sequences import SequenceData
from core.data.splits import leave_one_out
from core.errors import ConfigError, DataError

MAX_TITLES = 8


@dataclass(frozen=True)
class ProfilesConfig:
    """What ``python -m distillation.profiles`` does; each key is also a flag of the same name."""

    dataset: str = ""      # prepared dataset name under data/ or a folder (required)
    texts: str = ""        # profile texts from an LLM: {user_id: text} JSON or JSONL
    embeddings: str = ""   # user vectors of another pipeline (X.npy with X.ids.json)
    dim: int = 0           # PCA to this many dimensions (0 = keep)
    template: str = "full"  # templated texts: full | rich | taste | loved | recent (one aspect each)
    model: str = ""        # sentence-transformers model path (empty: bundled MiniLM)
    out: str = ""          # output folder (empty: state_dict/embeddings/distillation/<dataset>)
    device: str = "auto"


# --------------------------------------------------------------------------- loading + validation
def load_profile_json(path: str | Path) -> dict[str, list[float]]:
    """``{user_id: [floats]}``, checked: one dimension, numbers only, all finite."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: profile embeddings not found; write them with `python -m distillation.profiles`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: accept a byte-order mark
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc}); expected {{user_id: [floats]}}") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a non-empty object {{user_id: [floats]}}")
    dim = None
    for user, vec in raw.items():
        if not isinstance(vec, list) or not vec or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec):
            raise DataError(f"{path}: user {user!r}: the profile must be a non-empty list of numbers")
        if dim is None:
            dim = len(vec)
        elif len(vec) != dim:
            raise DataError(f"{path}: user {user!r} has {len(vec)} dimensions, others have {dim}; "
                            "all profiles must have one size")
        if not all(math.isfinite(x) for x in vec):
            raise DataError(f"{path}: user {user!r}: profile contains NaN or infinity")
    return raw


def profile_tensors(paths: list[str], data: SequenceData, train_users: np.ndarray, missing: str = "error",
                    multi_profile: bool = False, shuffle_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Profiles by 1-based user index: ``[n_users + 1, K, P]`` values and ``[n_users + 1, K]`` presence.

    ``missing``: a training user without a profile is an ``error``, is ``skip``-ped (no
    distillation term) or gets a ``zero`` vector. ``shuffle_seed`` permutes profiles
    across users (the control experiment).
    """
    if len(paths) > 1 and not multi_profile:
        raise ConfigError(f"{len(paths)} profile files given but distill.multi_profile is false; "
                          "set multi_profile=true to use several profiles per user")
    tables = [load_profile_json(p) for p in paths]
    dims = {len(next(iter(t.values()))) for t in tables}
    if len(dims) > 1:
        raise DataError(f"profile files {', '.join(map(str, paths))} have different sizes {sorted(dims)}")
    dim = dims.pop()
    values = torch.zeros(data.n_users + 1, len(tables), dim)
    present = torch.zeros(data.n_users + 1, len(tables), dtype=torch.bool)
    for k, (path, table) in enumerate(zip(paths, tables)):
        for u, raw in enumerate(data.user_ids, start=1):
            vec = table.get(str(raw))
            if vec is not None:
                values[u, k] = torch.tensor(vec, dtype=torch.float32)
                present[u, k] = True
        lacking = [u for u in train_users if not present[u, k]]
        if lacking and missing == "error":
            raise DataError(f"{path}: {len(lacking)} training users have no profile (first: "
                            f"{data.user_ids[lacking[0] - 1]!r}); regenerate the profiles for this dataset or set "
                            "distill.missing_profiles=skip (or zero)")
        if missing == "zero":
            present[1:, k] = True
    if shuffle_seed is not None:
        gen = torch.Generator().manual_seed(shuffle_seed)
        have = torch.nonzero(present[:, 0]).flatten()
        perm = have[torch.randperm(len(have), generator=gen)]
        values[have] = values[perm].clone()
    return values, present


# --------------------------------------------------------------------------- profile texts
def _decade(year) -> str | None:
    return f"{int(year) // 10 * 10}s" if isinstance(year, (int, float)) and year else None


def _share(counter: Counter, total: int, top: int) -> str:
    return ", ".join(f"{name} ({100 * n / total:.0f}%)" for name, n in counter.most_common(top))


TEMPLATES = ("full", "rich", "taste", "loved", "recent")
# the aspects of one user that `rich` joins into one text; `taste`, `loved` and `recent` are each
# one of them alone, to be distilled as several profiles per user (distill.multi_profile)
ASPECTS = {"full": None, "rich": ("taste", "recent", "loved"), "taste": ("taste",), "loved": ("loved",),
           "recent": ("recent",)}
# loved titles in `rich` / `loved`; they come last in `rich`, so that where MiniLM's 256 tokens cut
# a long text it is the tail of this list that goes
RICH_TITLES = 15


def profile_text(history: list[int], data: SequenceData, item_side: dict | None, user_info: dict | None,
                 ratings: np.ndarray | None, template: str = "full") -> str:
    """One readable paragraph about a user from their training items (internal ids). ``template``:
    ``full`` (the shipped one), ``rich`` (more genres, per-genre ratings, more titles, the most
    recent ones), or one aspect of ``rich`` alone (``taste``, ``loved``, ``recent``)."""
    info = [item_side.get(str(data.item_ids[i - 1]), {}) if item_side else {} for i in history]
    titles = [x.get("title") or f"item {data.item_ids[i - 1]}" for x, i in zip(info, history)]
    labels = [f"{t} ({x['year']})" if x.get("year") else t for t, x in zip(titles, info)]
    genres = Counter(g for x in info for g in (x.get("genres") or []))
    cats = Counter(x["category"] for x in info if x.get("category"))
    decades = Counter(d for x in info if (d := _decade(x.get("year"))))
    recency = np.arange(len(history))
    aspects = ASPECTS[template]  # None: the shipped `full` text
    parts = []
    if aspects is None or "taste" in aspects:
        wide = aspects is not None  # the aspect texts name more genres, categories and decades
        parts += [_who(user_info), f"{len(history)} interactions in the history."]
        if genres:
            parts.append(f"Favourite genres: {_share(genres, len(history), 6 if wide else 4)}.")
        if cats:
            parts.append(f"Frequent categories: {_share(cats, len(history), 5 if wide else 3)}.")
        if decades:
            parts.append(f"Films by decade: {_share(decades, len(history), 3)}." if wide
                         else f"Mostly films from the {decades.most_common(1)[0][0]}.")
        if ratings is not None:
            parts.append(f"Average rating {float(ratings.mean()):.1f} of 5.")
    if aspects is None:
        parts += _rated(labels, ratings, recency, MAX_TITLES) if ratings is not None else \
            ["Recently: " + "; ".join(labels[::-1][:MAX_TITLES]) + "."]
        return " ".join(p for p in parts if p)
    loved, disliked = _rated(labels, ratings, recency, RICH_TITLES) if ratings is not None else ("", "")
    if "taste" in aspects and ratings is not None:
        by_genre = {g: float(np.mean([r for x, r in zip(info, ratings) if g in (x.get("genres") or [])]))
                    for g, n in genres.items() if n >= 3}
        ranked = sorted(by_genre, key=lambda g: (-by_genre[g], g))
        high = min(3, (len(ranked) + 1) // 2)  # the top half, at most 3; the lowest (at most 2) below them
        if len(ranked) >= 2:
            parts.append("Rates highest: " + ", ".join(f"{g} {by_genre[g]:.1f}" for g in ranked[:high])
                         + "; lowest: " + ", ".join(f"{g} {by_genre[g]:.1f}" for g in ranked[high:][::-1][:2]) + ".")
    if "recent" in aspects:
        parts += ["Most recently: " + "; ".join(labels[::-1][:5]) + ".", disliked]
    if "loved" in aspects:
        earlier = labels[::-1][5:5 + RICH_TITLES]  # without ratings: the titles before the recent ones
        parts.append(loved if ratings is not None else "Earlier: " + "; ".join(earlier) + "." if earlier else "")
    return " ".join(p for p in parts if p)


def _who(user_info: dict | None) -> str:
    if not user_info:
        return ""
    who = [f"{user_info['age']}-year-old" if "age" in user_info else "",
           {"M": "man", "F": "woman"}.get(str(user_info.get("gender")), ""), str(user_info.get("occupation", ""))]
    who = " ".join(w for w in who if w and w != "None")
    return f"A {who}." if who else ""


def _rated(labels: list[str], ratings: np.ndarray, recency: np.ndarray, n_loved: int) -> tuple[str, str]:
    """("Loved: ...", "Disliked: ..."), each "" when there is none: highest (lowest) rated first,
    most recent first among equals; ``n_loved`` loved and ``MAX_TITLES // 2`` disliked titles."""
    loved = [labels[j] for j in np.lexsort((-recency, -ratings)) if ratings[j] >= 4][:n_loved]
    disliked = [labels[j] for j in np.lexsort((-recency, ratings)) if ratings[j] <= 2][:MAX_TITLES // 2]
    return tuple(f"{word}: " + "; ".join(titles) + "." if titles else ""
                 for word, titles in (("Loved", loved), ("Disliked", disliked)))


def write_profile_texts(data: SequenceData, folder: Path, template: str = "full") -> dict[str, str]:
    """Texts for every user from the leave-one-out *training* prefix only (``profile_text``'s ``template``)."""
    split = leave_one_out(data)
    item_side, user_side = data.item_side(folder), data.user_side(folder)
    texts = {}
    for u, raw in enumerate(data.user_ids, start=1):
        n = int(split.train_len[u - 1])
        start = int(data.offsets[u - 1])
        history = data.items[start:start + n].tolist()
        ratings = data.ratings[start:start + n] if data.ratings is not None else None
        texts[str(raw)] = profile_text(history, data, item_side, (user_side or {}).get(str(raw)), ratings, template)
    return texts


def read_texts(path: Path) -> dict[str, str]:
    """``{user_id: text}`` JSON, or JSONL lines ``{"user_id": ..., "profile": ...}``."""
    if not path.is_file():
        raise DataError(f"{path}: profile texts not found")
    if path.suffix == ".jsonl":
        from core.data.jsonl import iter_jsonl, require

        out = {}
        for lineno, rec in iter_jsonl(path):
            user = require(rec, "user_id", (str, int), path, lineno)
            text = rec.get("profile", rec.get("text"))
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}:{lineno}: needs a non-empty string field 'profile' (or 'text')")
            out[str(user)] = text
        return out
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: accept a byte-order mark
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc}); expected {{user_id: text}}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise DataError(f"{path}: expected {{user_id: non-empty text}}")
    return {str(k): v for k, v in raw.items()}


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    if dim >= x.shape[1]:
        return x
    if dim > min(x.shape):
        raise ConfigError(f"--dim {dim} exceeds what {x.shape[0]} users x {x.shape[1]} dims allow")
    from sklearn.decomposition import PCA

    return PCA(n_components=dim, random_state=0).fit_transform(x).astype(np.float32)


FLAGS = ("dataset", "texts", "embeddings", "dim", "template", "model", "out", "device")


def parse_args(argv=None) -> ProfilesConfig:
    """``--config FILE.yaml`` <- ``--override "k=v,..."`` <- the seed's flags, as one ``ProfilesConfig``."""
    from core.config import load_config, replace

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of ProfilesConfig keys (e.g. configs/distillation/profiles/ml-100k.yaml)")
    parser.add_argument("--override", action="append", default=[], metavar='"a=1,b=x"',
                        help="comma-separated key=value pairs applied over the config; values are YAML; may be repeated")
    parser.add_argument("--dataset", help="prepared dataset name under data/ or a folder (required here or in the config)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--texts", help="profile texts from an LLM: {user_id: text} JSON or JSONL")
    src.add_argument("--embeddings", help="user vectors of another pipeline (X.npy with X.ids.json)")
    parser.add_argument("--dim", type=int, help="PCA to this many dimensions (0 = keep)")
    parser.add_argument("--template", choices=TEMPLATES,
                        help="templated texts: full (default), rich, or one aspect of rich alone: taste, loved, recent "
                             "(several aspect files make several profiles per user: distill.multi_profile)")
    parser.add_argument("--model", help="sentence-transformers model path (default: bundled MiniLM)")
    parser.add_argument("--out", help="output folder (default: state_dict/embeddings/distillation/<dataset>)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    args = parser.parse_args(argv)
    cfg = load_config(ProfilesConfig, args.config, ",".join(o for o in args.override if o and o.strip()))
    flags = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    if flags:  # set as values, not as override text, so that paths with commas or quotes pass unchanged
        cfg = replace(cfg, **flags)
    if not cfg.dataset:
        raise ConfigError("no dataset: give --dataset NAME (a prepared dataset under data/ or a folder) "
                          "or dataset: in --config")
    if cfg.texts and cfg.embeddings:
        raise ConfigError("texts and embeddings are alternatives: give one of them")
    if cfg.template not in TEMPLATES:
        raise ConfigError(f"template {cfg.template!r}: use one of {', '.join(TEMPLATES)}")
    if cfg.template != "full" and (cfg.texts or cfg.embeddings):
        raise ConfigError(f"template={cfg.template} shapes the templated texts; it does not apply to texts or embeddings")
    return cfg


def main(argv=None) -> int:
    from core.cli import resolve_device

    args = parse_args(argv)
    folder = store.dataset_folder(args.dataset)
    data = SequenceData.load(folder)
    out = Path(args.out) if args.out else store.embeddings_dir("distillation", folder.name)
    users = [str(u) for u in data.user_ids]
    if args.embeddings:
        vectors, ids = store.load_embeddings(args.embeddings)
        table = dict(zip(map(str, ids), vectors))
        users = [u for u in users if u in table]
        if not users:
            raise DataError(f"{args.embeddings}: none of its ids are users of {folder}")
        matrix = np.stack([table[u] for u in users]).astype(np.float32)
        texts = None
    else:
        texts = read_texts(Path(args.texts)) if args.texts else write_profile_texts(data, folder, args.template)
        users = [u for u in users if u in texts]
        if not users:
            raise DataError(f"{args.texts}: none of its user ids are users of {folder}")
        from core.text import encode_texts

        matrix = encode_texts([texts[u] for u in users], model=args.model or None, device=str(resolve_device(args.device)))
    if args.dim:
        matrix = pca(np.asarray(matrix, dtype=np.float32), args.dim)
    tag = "" if args.template == "full" else f"-{args.template}"  # full keeps the shipped file names
    name = f"profiles{tag}-{args.dim}" if args.dim else f"profiles{tag}"
    path = out / f"{name}.json"
    store.atomic_write_json(path, {u: [round(float(x), 6) for x in row] for u, row in zip(users, matrix)}, indent=None)
    if texts is not None:
        store.atomic_write_json(out / f"profile_texts{tag}.json", {u: texts[u] for u in users})
    print(f"{len(users)} profiles of {matrix.shape[1]} dims -> {path}")
    if texts is not None:
        print(f"texts -> {out / f'profile_texts{tag}.json'}\nexample ({users[0]}): {texts[users[0]]}")
    return 0


if __name__ == "__main__":
    from core.cli import run

    run(main)

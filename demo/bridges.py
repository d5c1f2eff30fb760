"""The glue the demo needs between pipelines: files in the formats the next pipeline reads.

- ``write_candidates``: a trained sequence model's top-N lists for the test users (history
  excluded) and the ground truth, in the JSONL layout of ``core.candidates``;
- ``write_persona_files``: the generated default rendered in the Persona4Rec layout
  (``persona_training.schema``), one persona per item named after its cluster;
- ``persona_user_vectors``: every user's vector as the persona reranker forms it (the mean
  of their interaction embeddings, ``persona_training.scoring.user_vector``), saved in the
  store's embedding format, which ``distillation.profiles --embeddings`` turns into profiles.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core import store
from core.data.sequences import SequenceData
from core.data.splits import Split
from core.evaluation import Evaluator

# readable names for the synthetic clusters, so a text encoder can tell them apart
TOPICS = ["jazz", "gardening", "astronomy", "baking", "football", "poetry", "chess", "sailing", "photography",
          "knitting", "hiking", "robotics", "opera", "surfing", "pottery", "cycling"]


def _jsonl(path: Path, rows) -> None:
    store.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@torch.no_grad()
def write_candidates(folder: Path, name: str, score_fn, split: Split, width: int, n: int = 20,
                     device="cpu") -> Path:
    """``<folder>/<name>.jsonl`` ({user_id, results: [{item_id, score}]}) of every test user's
    top-``n`` (the shared evaluator's ``recommend``: history excluded) plus ``gt.jsonl``."""
    data = split.data
    evaluator = Evaluator(split, "test", width, sampled=(), device=device)
    users, items, scores = evaluator.recommend(score_fn, n)
    target = dict(zip(evaluator.users.tolist(), evaluator.targets.tolist()))
    uids = [str(data.user_ids[u - 1]) for u in users]
    path = folder / f"{name}.jsonl"
    _jsonl(path, ({"user_id": uid, "results": [{"item_id": str(data.item_ids[i - 1]), "score": round(float(s), 5)}
                                               for i, s in zip(row, srow)]}
                  for uid, row, srow in zip(uids, items, scores)))
    _jsonl(folder / "gt.jsonl", ({"user_id": uid, "item_id": str(data.item_ids[target[u] - 1])}
                                 for uid, u in zip(uids, users)))
    return path


def item_texts(data: SequenceData, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Raw item id -> (text, topic); the topic names the item's cluster (its ``category``)."""
    side = data.item_side(folder) or {}
    cats = sorted({str(side.get(str(i), {}).get("category", "")) for i in data.item_ids})
    topic_of = {c: TOPICS[k] if k < len(TOPICS) else f"topic {k}" for k, c in enumerate(cats)}
    topics, texts = {}, {}
    for raw in map(str, data.item_ids):
        info = side.get(raw, {})
        topics[raw] = topic_of[str(info.get("category", ""))]
        texts[raw] = f"{info.get('title', raw)}, a {topics[raw]} pick."
    return texts, topics


def _reviews(uid: str, items: np.ndarray, stamps, data: SequenceData, texts: dict) -> list[dict]:
    raws = [str(data.item_ids[i - 1]) for i in items]
    return [{"user_id": uid, "item_id": raw, "review_title": "", "summary": texts[raw], "extracted": {}, "rating": 5.0,
             "timestamp": int(t)} for raw, t in zip(raws, stamps)]


def write_persona_files(out: Path, split: Split, folder: Path, candidates: Path, pair_users: np.ndarray,
                        history: int) -> dict[str, Path]:
    """Persona4Rec-layout files: training pairs of ``pair_users`` (positions in ``split.valid``)
    and, for the rerank, the lists in ``candidates`` of every other user.

    Rerank users' histories end before their test item; a training pair joins a pair user's
    history before their *validation* item with the persona of that item, so the encoder never
    sees a test item. Returns the paths by data.yaml key (``loo_history_train`` for training).
    """
    data = split.data
    texts, topics = item_texts(data, folder)
    persona_rows = [{"item_id": raw, "personas": [{
        "ID": "P1", "unique_persona_id": f"{raw}_P1", "Name": f"The {topics[raw]} enthusiast",
        "Description": f"Always after the next {topics[raw]} item.", "Item_Summary": texts[raw],
        "Preference_Rationale": f"It is about {topics[raw]}."}]} for raw in map(str, data.item_ids)]
    stamps = data.timestamps if data.timestamps is not None else np.arange(len(data.items))

    def history_rows(users, ends):
        rows = []
        for u, end in zip(users, ends):
            start = int(data.offsets[u - 1])
            lo, hi = max(start, start + int(end) - history), start + int(end)
            uid = str(data.user_ids[u - 1])
            rows.append({"user_id": uid, "reviews": _reviews(uid, data.items[lo:hi], stamps[lo:hi], data, texts)})
        return rows

    pair_ids = {str(data.user_ids[u - 1]) for u in split.valid.users[pair_users]}
    lists = [json.loads(line) for line in candidates.read_text(encoding="utf-8").splitlines()]
    lists = [row for row in lists if row["user_id"] not in pair_ids]
    position = {str(data.user_ids[u - 1]): k for k, u in enumerate(split.test.users)}
    rerank = np.array([position[row["user_id"]] for row in lists], dtype=np.int64)
    paths = {"persona": out / "3.5_persona_with_summary.jsonl", "loo_history": out / "3.5_history_loo.jsonl",
             "loo_history_train": out / "3.5_history_train.jsonl", "selected": out / "4_selected_personas.jsonl",
             "candidates": out / "candidate.jsonl", "gt": out / "gt.jsonl"}
    _jsonl(paths["persona"], persona_rows)
    _jsonl(paths["loo_history"], history_rows(split.test.users[rerank], split.test.hist_len[rerank]))
    _jsonl(paths["loo_history_train"], history_rows(split.valid.users[pair_users], split.valid.hist_len[pair_users]))
    _jsonl(paths["selected"], ({"user_id": str(data.user_ids[u - 1]), "target_item_id": str(data.item_ids[t - 1]),
                                "selected_persona_id": "P1"}
                               for u, t in zip(split.valid.users[pair_users], split.valid.targets[pair_users])))
    _jsonl(paths["candidates"], lists)
    _jsonl(paths["gt"], ({"user_id": str(data.user_ids[split.test.users[k] - 1]),
                          "item_id": str(data.item_ids[split.test.targets[k] - 1])} for k in rerank))
    return paths


def persona_user_vectors(model: str, split: Split, folder: Path, history: int, out: Path, cache_dir: Path,
                         device: str = "cpu") -> Path:
    """Every user's persona-space vector from their training items only (the profile a
    distillation run may read), as ``<out>/users.npy`` + ``users.ids.json``."""
    from core.text import encode_texts
    from persona_training.schema import Review
    from persona_training.scoring import user_vector
    from persona_training.texts import interaction_text

    data = split.data
    texts, _ = item_texts(data, folder)
    # the reranker's interaction text of each item (every review of an item reads the same)
    line = {raw: interaction_text(Review("", raw, "", t, {}, 5.0, 0)) for raw, t in texts.items()}
    raws = list(line)
    # each distinct text is encoded once (core.text caches by text)
    table = dict(zip(raws, encode_texts([line[r] for r in raws], model=model, device=device, cache_dir=cache_dir,
                                        normalize=True, show_progress=False)))
    vectors = []
    for u in range(1, data.n_users + 1):
        start = int(data.offsets[u - 1])
        items = data.items[start:start + int(split.train_len[u - 1])]
        vec = user_vector(np.stack([table[str(data.item_ids[i - 1])] for i in items]) if len(items) else None, history)
        vectors.append(vec if vec is not None else np.zeros(len(next(iter(table.values()))), np.float32))
    return store.save_embeddings(out, "users", np.stack(vectors), [str(u) for u in data.user_ids])

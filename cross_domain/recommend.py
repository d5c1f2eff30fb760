"""``recommend``: the top-k target items for one raw user id, from the baseline or (with
``--use-transfer``) the transfer model, scored after the user's whole target history (items
already seen are left out). Titles come from the dataset's ``item_side.json`` when it has them.
A user with no target items is scored from the begin token alone (the baseline then shows
what is popular with new users; the transfer model uses the source vector)."""
from __future__ import annotations

import json

import numpy as np
import torch

from core.cli import resolve_device
from core.data.splits import history_mask, padded_prefixes
from core.errors import UserError
from cross_domain.data import load_domains
from cross_domain.transfer import load_trained


def item_titles(folder) -> dict:
    path = folder / "item_side.json"
    if not path.is_file():
        return {}
    side = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): v.get("title") for k, v in side.items() if isinstance(v, dict) and v.get("title")}


@torch.no_grad()
def recommend(cfg, user: str, k: int = 10, use_transfer: bool = False, log=print) -> dict:
    if k < 1:
        raise UserError(f"--k {k}: ask for at least 1 item")
    device = resolve_device(cfg.device)
    dom = load_domains(cfg.data)
    index = {str(u): i + 1 for i, u in enumerate(dom.user_ids)}
    if str(user) not in index:
        raise UserError(f"user {user!r} is not in {dom.folder.name} (no interactions in {dom.target_name} or "
                        f"{dom.source_name}); ids look like {', '.join(map(repr, dom.user_ids[:3]))}")
    u = index[str(user)]
    kind = ("ptupcdr" if cfg.transfer.bridge == "ptupcdr" else "transfer") if use_transfer else "baseline"
    model, side, path = load_trained(cfg, dom, kind, None, device)  # serving: any cold protocol's model will do
    data = dom.target
    hist_len = np.array([data.lengths[u - 1]])
    inputs = torch.as_tensor(padded_prefixes(data, np.array([u]), hist_len, model.maxlen - 1), device=device)
    users = torch.tensor([u], device=device)
    scores = model.full_scores(model.with_bos(inputs), **side(users))[0]
    scores[history_mask(data, np.array([u]), hist_len, device=device)[0]] = -float("inf")
    k = min(k, int(torch.isfinite(scores).sum()))
    top = torch.topk(scores, k)
    titles = item_titles(dom.folder)
    has_source = bool(side.vectors is not None and side.vectors[u].ne(0).any())
    items = []
    for rank, (i, s) in enumerate(zip(top.indices.tolist(), top.values.tolist()), 1):
        raw = data.item_ids[i - 1]
        items.append({"rank": rank, "item": raw, "title": titles.get(str(raw), ""), "score": round(float(s), 4)})
    return {"user": user, "target": dom.target_name, "source": dom.source_name, "model": kind, "checkpoint": str(path),
            "history_items": int(hist_len[0]), "source_vector": has_source if use_transfer else None, "items": items}

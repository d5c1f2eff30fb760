"""Stage-1 training rows: per user, cloze-masked rows of the A, B and cross views at once."""
from __future__ import annotations

import numpy as np
import torch

from core.data.batches import cloze_mask, trim_padding
from core.data.domains import DOMAIN_CODES, DomainViews, load_views  # noqa: F401 (load_views: re-export)
from core.data.sequences import SequenceData
from core.data.splits import leave_one_out, padded_prefixes
from core.errors import DataError

VIEWS = ("A", "B", "cross")


def padded_rows(data: SequenceData, users: np.ndarray, width: int) -> torch.Tensor:
    """Each listed (1-based) user's whole sequence, last ``width`` items, left-padded."""
    return torch.as_tensor(padded_prefixes(data, users, data.lengths[users - 1], width))


class TriViewCloze:
    """``get_batch`` -> ``{"A": {...}, "B": {...}, "cross": {...}, "users": ...}``, each view a
    cloze batch (``input``, ``target``) of the same users."""

    def __init__(self, views: DomainViews, maxlen: int, mask_prob: float, mask_token: int, device=None,
                 last_mask_prob: float = 0.0) -> None:
        data = {"A": views.a, "B": views.b, "cross": views.cross}
        users = np.arange(1, views.cross.n_users + 1)
        # every view must hold something to predict for the user
        keep = np.all([data[v].lengths >= 1 for v in VIEWS], axis=0)
        self.users = torch.as_tensor(users[keep], device=device)
        self.rows = {v: padded_rows(data[v], users[keep], maxlen).to(device) for v in VIEWS}
        self.mask_prob, self.mask_token, self.last_mask_prob = mask_prob, mask_token, last_mask_prob
        self.dropped = int((~keep).sum())

    def __len__(self) -> int:
        return len(self.users)

    def get_batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        out: dict = {"users": self.users[index]}
        for v in VIEWS:
            inputs, targets = cloze_mask(trim_padding(self.rows[v][index]), self.mask_prob, self.mask_token, generator,
                                         self.last_mask_prob)
            out[v] = {"input": inputs, "target": targets}
        return out


def holdout_views(views: DomainViews, m: int) -> dict[str, SequenceData]:
    """The A, B and cross views cut causally before the last ``m`` target items of each user's
    stage-2 training part (``leave_one_out(views.target_all)``, as ``recommendation_model``
    trains on), keyed ``"A"``, ``"B"``, ``"cross"``.

    With ``keep = max(0, train_len - m)`` target training items kept:

    - the target view keeps its first ``keep`` items (the held-out ones and all after go);
    - the cross view keeps everything before its ``keep + 1``-th target item (the first
      held-out one), so other-domain items after that point in time go too;
    - the other view keeps the other-domain items of that kept cross prefix (the same time
      point; positions in the merged sequence, as the views carry no timestamps).

    A user whose cross view holds no held-out item (no target training items) keeps every view
    whole. Cut-down sequences may be empty; ``encode_users`` encodes those as the mask alone.
    """
    t = DOMAIN_CODES.index(views.target)
    own_code, other_code = views.target, DOMAIN_CODES[1 - t]
    own_view, other_view = views.view(own_code), views.view(other_code)
    dom = views.item_domain
    train_len = leave_one_out(views.target_all).train_len
    cut: dict[str, list] = {own_code: [], other_code: [], "cross": []}
    for u in range(1, views.cross.n_users + 1):
        keep = max(0, int(train_len[u - 1]) - m)
        own, other, cross = own_view.sequence(u), other_view.sequence(u), views.cross.sequence(u)
        own_pos = np.flatnonzero(dom[cross] == t)
        if len(own_pos) > keep:
            cross = cross[:own_pos[keep]]
            before = cross[dom[cross] == 1 - t]
            # the other view is cut by counting, so its order must be the cross view's
            if not np.array_equal(other[:len(before)], before):
                raise DataError(f"{views.source}: user {views.cross.user_ids[u - 1]!r}: the cross view's "
                                f"domain-{other_code} items are not in the order of the {other_code} view; the holdout "
                                "cut needs time-ordered views")
            other = other[:len(before)]
        cut[own_code].append(own[:keep])
        cut[other_code].append(other)
        cut["cross"].append(cross)
    common = dict(n_items=views.n_items, user_ids=views.cross.user_ids, item_ids=views.cross.item_ids, item_domain=dom)
    return {k: SequenceData.from_lists(v, **common) for k, v in cut.items()}


@torch.no_grad()
def encode_users(encoder, data: SequenceData, maxlen: int, device, batch_size: int = 1024) -> np.ndarray:
    """``encoder.last_hidden`` of every user's whole sequence (empty ones: just the mask)."""
    encoder.eval()
    users = np.arange(1, data.n_users + 1)
    out = []
    for start in range(0, len(users), batch_size):
        rows = padded_rows(data, users[start:start + batch_size], maxlen).to(device)
        out.append(encoder.last_hidden(trim_padding(rows)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.item_emb.embedding_dim), dtype=np.float32)

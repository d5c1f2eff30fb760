"""Stage-1 training rows: per user, cloze-masked rows of the A, B and cross views at once."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.batches import cloze_mask, trim_padding
from core.data.domains import DomainViews
from core.data.sequences import SequenceData
from core.data.splits import padded_prefixes

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


def load_views(cfg) -> tuple[DomainViews, Path]:
    """The two-domain views named by a ``DomainDataConfig``; the synthetic default is
    generated on first use."""
    from core.data.domains import load_domain_views
    from core.seqrec import SYNTHETIC_NAMES, DataConfig, load_dataset

    folder = cfg.folder()
    if folder.name in SYNTHETIC_NAMES and not (folder / "meta.json").is_file():
        load_dataset(DataConfig(dataset=str(folder.name), data_root=str(folder.parent)))
    return load_domain_views(folder, cfg.target), folder


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

"""BERT4Rec (Sun et al., 2019): a bidirectional Transformer trained by cloze (masked items).

Training masks random items (``core.data.batches.ClozeDataset``) and predicts them from both
sides. To recommend, the history is shifted left by one and a mask token appended; the
hidden state at that last position scores the catalog. Output layer: a GELU + LayerNorm
head, then the tied item embeddings plus a per-item bias, as in the original.
"""
from __future__ import annotations

import torch
from torch import nn

from core.models.base import SequentialRecommender


class BERT4Rec(SequentialRecommender):
    causal = False
    kind = "bert4rec"
    scale_item_embeddings = False  # BERT: item + position embeddings, then LayerNorm

    def __init__(self, n_items: int, output_bias: bool = True, **kwargs) -> None:
        super().__init__(n_items, extra_tokens=1, **kwargs)
        self._args["output_bias"] = output_bias
        hidden = self.item_emb.embedding_dim
        self.mask_token = n_items + 1
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        # the per-item bias of the original output layer; off, scores are pure dot products
        # (a bias learns the popularity prior, which short Amazon histories overweight)
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1), requires_grad=output_bias)
        nn.init.normal_(self.head[0].weight, std=self._args["initializer_range"])
        nn.init.zeros_(self.head[0].bias)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    def output_bias(self) -> torch.Tensor | None:
        return self.out_bias if self._args["output_bias"] else None

    def last_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        # append the mask token; forward keeps the last maxlen positions (drops the oldest if full)
        masked = torch.cat([input_ids, torch.full_like(input_ids[:, :1], self.mask_token)], dim=1)
        return self.project(self(masked, last_only=True)[:, -1])

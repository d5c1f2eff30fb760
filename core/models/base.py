"""One interface for the sequential recommenders (SASRec, BERT4Rec, and pipelines built on them).

- ``forward(input_ids, return_layers)``: hidden states [B, L, D] (and per-layer states);
- ``training_loss(batch, generator)``: scalar loss for a batch of ``core.data.batches``;
- ``full_scores(input_ids)``: [B, n_items + 1] scores of every item for the next position;
- ``candidate_scores(input_ids, candidates)``: [B, C] scores of given items;
- ``model_args``: constructor kwargs, stored in checkpoints so a model rebuilds from its file.

Losses (``loss``): ``ce`` = softmax cross-entropy over the whole catalog; ``sampled_softmax``
= softmax over the positive and ``num_negatives`` uniformly sampled items shared by the batch
(for catalogs too large for ``ce``); ``bce`` = the original SASRec binary loss with one
sampled negative per position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.data.batches import sample_train_negatives
from core.models.transformer import TransformerBlock, attention_mask

LOSSES = ("ce", "sampled_softmax", "bce")


class SequentialRecommender(nn.Module):
    causal: bool = True
    kind: str = "base"

    def __init__(
        self,
        n_items: int,
        maxlen: int = 50,
        hidden_units: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        dropout_rate: float = 0.2,
        initializer_range: float = 0.02,
        loss: str = "ce",
        num_negatives: int = 256,
        extra_tokens: int = 0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self._args = dict(n_items=n_items, maxlen=maxlen, hidden_units=hidden_units, num_blocks=num_blocks,
                          num_heads=num_heads, dropout_rate=dropout_rate, initializer_range=initializer_range,
                          loss=loss, num_negatives=num_negatives)
        self.n_items = n_items
        self.maxlen = maxlen
        self.loss_name = loss
        self.num_negatives = num_negatives
        self.item_emb = nn.Embedding(n_items + 1 + extra_tokens, hidden_units, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, hidden_units)
        self.emb_drop = nn.Dropout(dropout_rate)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_units, num_heads, dropout_rate) for _ in range(num_blocks))
        self.final_ln = nn.LayerNorm(hidden_units)
        self._init(initializer_range)

    @property
    def model_args(self) -> dict:
        return dict(self._args)

    def _init(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    # ------------------------------------------------------------------ encoder
    def forward(self, input_ids: torch.Tensor, return_layers: bool = False):
        """Hidden states [B, L, D]; with ``return_layers`` also a list of each block's output."""
        input_ids = input_ids[:, -self.maxlen :]
        length = input_ids.shape[1]
        positions = torch.arange(self.maxlen - length, self.maxlen, device=input_ids.device)
        x = self.item_emb(input_ids) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(positions)
        x = self.emb_drop(x)
        real = (input_ids > 0).unsqueeze(-1)
        mask = attention_mask(input_ids, self.causal)
        layers = []
        for block in self.blocks:
            x = block(x, mask) * real
            layers.append(x)
        h = self.final_ln(x) * real
        return (h, layers) if return_layers else h

    def item_weights(self) -> torch.Tensor:
        """Output embedding of items 0..n_items (tied with the input embedding)."""
        return self.item_emb.weight[: self.n_items + 1]

    # ------------------------------------------------------------------ scoring
    def last_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self(input_ids)[:, -1]

    def full_scores(self, input_ids: torch.Tensor) -> torch.Tensor:
        scores = self.last_hidden(input_ids) @ self.item_weights().T
        scores[:, 0] = -math.inf
        return scores

    def candidate_scores(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        h = self.last_hidden(input_ids)
        return (self.item_emb(candidates) * h.unsqueeze(1)).sum(-1)

    # ------------------------------------------------------------------ losses
    def prediction_loss(self, hidden: torch.Tensor, targets: torch.Tensor, seqs: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss of predicting ``targets`` ([B, L], 0 = no target) from ``hidden`` ([B, L, D])."""
        sel = targets > 0
        h = hidden[sel]
        pos = targets[sel]
        if self.loss_name == "ce":
            logits = h @ self.item_weights().T
            logits[:, 0] = -math.inf
            return F.cross_entropy(logits.float(), pos)
        if self.loss_name == "sampled_softmax":
            negs = torch.randint(1, self.n_items + 1, (self.num_negatives,), device=h.device, generator=generator)
            pos_logit = (h * self.item_emb(pos)).sum(-1, keepdim=True)
            neg_logits = h @ self.item_emb(negs).T
            neg_logits = neg_logits.masked_fill(negs.view(1, -1) == pos.view(-1, 1), -math.inf)  # accidental hits
            logits = torch.cat([pos_logit, neg_logits], dim=1).float()
            return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=h.device))
        # bce: one negative per position, outside the user's sequence
        negs = sample_train_negatives(seqs, self.n_items, (targets.shape[1],), generator)[sel]
        pos_logit = (h * self.item_emb(pos)).sum(-1).float()
        neg_logit = (h * self.item_emb(negs)).sum(-1).float()
        return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + \
            F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        hidden = self(batch["input"])
        seqs = torch.cat([batch["input"], batch["target"][:, -1:]], dim=1)
        return self.prediction_loss(hidden, batch["target"], seqs, generator)

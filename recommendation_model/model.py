"""TriGRec stage 2: BERT4Rec on the target domain, fused with exported user vectors.

Each user vector (specific, cross) is expanded into ``memory_tokens`` key/value tokens; the
sequence's hidden states attend to each memory (cross-attention, SDPA) giving A1 (specific)
and A2 (cross); a gate G = sigmoid(W1 A1 + W2 A2) mixes them per position and dimension:
fused = LayerNorm(h + dropout(G * A1 + (1 - G) * A2)). With one source only, that source's
attention output is added; with none, the model is exactly a plain BERT4Rec.

With ``model.vector_holdout`` the training loss routes only the always-masked last items
through the fusion (``holdout_loss``); evaluation is unchanged.

A single vector as the only key would make attention trivial (one key: weight 1); several
memory tokens let each position pick what it needs from the user vector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.bert4rec import BERT4Rec


class MemoryAttention(nn.Module):
    def __init__(self, user_dim: int, hidden: int, num_heads: int, memory_tokens: int, dropout: float) -> None:
        super().__init__()
        self.tokens, self.heads = memory_tokens, num_heads
        # exported vectors come at any scale (a histogram sums to 1, an encoder's output is
        # LayerNorm-ed): normalise each one so that the user-dependent part is not drowned
        # by the projection's bias
        self.user_norm = nn.LayerNorm(user_dim)
        self.to_memory = nn.Linear(user_dim, memory_tokens * hidden)
        self.memory_norm = nn.LayerNorm(hidden)
        self.q, self.kv, self.out = nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * hidden), nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, h: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        b, length, d = h.shape
        mem = self.memory_norm(self.to_memory(self.user_norm(user)).view(b, self.tokens, d))
        split = lambda x: x.view(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        k, v = self.kv(mem).chunk(2, dim=-1)
        att = F.scaled_dot_product_attention(split(self.q(h)), split(k), split(v),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(att.transpose(1, 2).reshape(b, length, d))


class GatedFusion(nn.Module):
    def __init__(self, hidden: int, num_heads: int, spe_dim: int, cross_dim: int, memory_tokens: int,
                 dropout: float, gate: bool) -> None:
        super().__init__()
        self.spe = MemoryAttention(spe_dim, hidden, num_heads, memory_tokens, dropout) if spe_dim else None
        self.cross = MemoryAttention(cross_dim, hidden, num_heads, memory_tokens, dropout) if cross_dim else None
        self.gated = gate and self.spe is not None and self.cross is not None
        if self.gated:
            self.w1, self.w2 = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, spe: torch.Tensor | None, cross: torch.Tensor | None) -> torch.Tensor:
        a1 = self.spe(h, spe) if self.spe is not None else None
        a2 = self.cross(h, cross) if self.cross is not None else None
        if a1 is None and a2 is None:
            return h
        if self.gated:
            g = torch.sigmoid(self.w1(a1) + self.w2(a2))
            mix = g * a1 + (1 - g) * a2
        else:
            mix = sum(a for a in (a1, a2) if a is not None)
        return self.norm(h + self.drop(mix))


class TriGRecRecommender(nn.Module):
    """``core.models.base.Recommender``; side inputs ``spe`` / ``cross``: [B, spe_dim] / [B, cross_dim]
    user vectors (batch entries in training, keywords of the scorers)."""

    kind = "trigrec-rec"

    def __init__(self, n_items: int, spe_dim: int = 0, cross_dim: int = 0, memory_tokens: int = 4,
                 gate: bool = True, **bert_args) -> None:
        super().__init__()
        self.model_args = dict(n_items=n_items, spe_dim=spe_dim, cross_dim=cross_dim, memory_tokens=memory_tokens,
                               gate=gate, **bert_args)
        self.bert = BERT4Rec(n_items, **bert_args)
        hidden = self.bert.item_emb.embedding_dim
        self.fusion = GatedFusion(hidden, bert_args.get("num_heads", 2), spe_dim, cross_dim, memory_tokens,
                                  bert_args.get("dropout_rate", 0.2), gate)
        self.n_items, self.maxlen = n_items, self.bert.maxlen

    @property
    def mask_token(self) -> int:
        return self.bert.mask_token

    def hidden(self, input_ids: torch.Tensor, spe=None, cross=None) -> torch.Tensor:
        return self.bert.project(self.fusion(self.bert(input_ids), spe, cross))

    def training_loss(self, batch: dict, generator=None, spe=None, cross=None) -> torch.Tensor:
        """Cloze loss of a batch. The user vectors are the batch's ``spe`` / ``cross`` entries
        (rows of its ``users``; with ``model.vector_holdout`` the cut vectors) unless given here."""
        spe = batch.get("spe") if spe is None else spe
        cross = batch.get("cross") if cross is None else cross
        if "target_fused" in batch:
            return self.holdout_loss(batch, generator, spe, cross)
        seqs = torch.cat([batch["input"], batch["target"]], dim=1)
        return self.bert.prediction_loss(self.hidden(batch["input"], spe, cross), batch["target"], seqs, generator)

    def holdout_loss(self, batch: dict, generator=None, spe=None, cross=None) -> torch.Tensor:
        """One cloze loss over a ``HoldoutClozeDataset`` batch, one encoder pass: ``target_fused``
        positions are predicted from the fused state (``spe`` / ``cross``: vectors cut before
        those items), ``target_plain`` ones from the unfused BERT4Rec state, since the cut
        vectors still contain those earlier items."""
        h = self.bert(batch["input"])
        fused = (batch["target_fused"] > 0).unsqueeze(-1)
        hidden = torch.where(fused, self.bert.project(self.fusion(h, spe, cross)), self.bert.project(h))
        target = batch["target_fused"] + batch["target_plain"]  # disjoint positions
        seqs = torch.cat([batch["input"], target], dim=1)
        return self.bert.prediction_loss(hidden, target, seqs, generator)

    def last_hidden(self, input_ids: torch.Tensor, spe=None, cross=None) -> torch.Tensor:
        masked = torch.cat([input_ids, torch.full_like(input_ids[:, :1], self.mask_token)], dim=1)
        return self.hidden(masked[:, -self.maxlen:], spe, cross)[:, -1]

    def full_scores(self, input_ids, spe=None, cross=None) -> torch.Tensor:
        return self.bert.logits_all(self.last_hidden(input_ids, spe, cross))

    def candidate_scores(self, input_ids, candidates, spe=None, cross=None) -> torch.Tensor:
        return self.bert.logits_of(self.last_hidden(input_ids, spe, cross), candidates)

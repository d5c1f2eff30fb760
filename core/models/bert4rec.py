"""BERT4Rec (Sun et al., 2019): a bidirectional Transformer trained by cloze (masked items).

Training masks random items (``core.data.batches.ClozeDataset``) and predicts them from both
sides. To recommend, the history is shifted left by one and a mask token appended; the
hidden state at that last position scores the catalog. Output layer: a GELU + LayerNorm
head, then the tied item embeddings plus a per-item bias, as in the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.base import SequentialRecommender


class BERT4Rec(SequentialRecommender):
    causal = False
    kind = "bert4rec"
    scale_item_embeddings = False  # BERT: item + position embeddings, then LayerNorm

    def __init__(self, n_items: int, output_bias: bool = True, cl_weight: float = 0.0, cl_temperature: float = 1.0,
                 **kwargs) -> None:
        super().__init__(n_items, extra_tokens=1, **kwargs)
        self._args["output_bias"] = output_bias
        if cl_weight:  # only then: checkpoints of existing configs keep their exact args
            self._args.update(cl_weight=cl_weight, cl_temperature=cl_temperature)
        self.cl_weight, self.cl_temperature = cl_weight, cl_temperature
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

    def training_loss(self, batch: dict, generator: torch.Generator | None = None):
        if "input_b" not in batch:
            return super().training_loss(batch, generator)
        # two maskings of the same rows (ClozeDataset views=2): the cloze loss of both, plus an
        # InfoNCE term that pulls a row's two last-position states together against the batch's
        # other rows (the contrastive views of CBiT / DuoRec, on BERT4Rec's own cloze masks)
        both_inputs = torch.cat([batch["input"], batch["input_b"]])
        both_targets = torch.cat([batch["target"], batch["target_b"]])
        hidden = self.project(self(both_inputs))
        cloze = self.prediction_loss(hidden, both_targets, torch.cat([both_inputs, both_targets], dim=1), generator)
        rows = len(batch["input"])
        last = hidden[:, -1].float()
        sim = last @ last.T / self.cl_temperature
        sim.fill_diagonal_(float("-inf"))  # a state is not its own positive
        partner = torch.arange(2 * rows, device=sim.device).roll(rows)  # row i's other view: i + B, and back
        contrast = F.cross_entropy(sim, partner)
        return {"loss": cloze + self.cl_weight * contrast, "cloze": cloze.detach(), "contrast": contrast.detach()}

    def last_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        # append the mask token; forward keeps the last maxlen positions (drops the oldest if full)
        masked = torch.cat([input_ids, torch.full_like(input_ids[:, :1], self.mask_token)], dim=1)
        return self.project(self(masked, last_only=True)[:, -1])

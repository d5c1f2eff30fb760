"""Profile distillation: make a sequence model's user state reconstruct a text-profile embedding.

For user u with hidden states h_t^k of block k over the real positions t = 1..m:

- pooling H_k(S_u): ``mean`` (1/m sum h_t), ``exp`` (softmax(gamma * t) weights, recent
  items heavier) or ``attention`` (softmax(w^T h_t + b), learned);
- transformation T: ``down`` maps the profile E(P(u)) to the hidden size, ``up`` maps
  H_k to the profile size (with neither, the two sizes must match);
- L_distil = MSE (or 1 - cosine) between the two sides, over users that have a profile;
- total = alpha * beta * L_distil + (1 - alpha) * L_model with beta = stopgrad(L_model /
  L_distil) under dynamic scaling (the two terms then have equal magnitude and alpha alone
  sets the balance), else beta = 1; from ``fine_tune_epoch`` on, L_model only.

The distillation head (T, attention weights) lives in ``DistillLoss``, not in the
recommender: it trains with it but is not part of the saved model, which therefore
evaluates and serves exactly like a plain SASRec / BERT4Rec.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.layers import masked_mean as mean_pool  # the name the pooling table and tests use

EPS = 1e-8


def exp_pool(states: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """Weights softmax(gamma * t) over real positions t = 1..m (left padding: t grows to the right)."""
    t = real.long().cumsum(1).to(states.dtype)  # 1..m on real positions
    return weighted_pool(states, real, gamma * t)


def weighted_pool(states: torch.Tensor, real: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """softmax(scores) over real positions, then the weighted sum of ``states``."""
    scores = scores.float().masked_fill(~real, float("-inf"))
    empty = ~real.any(1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=1).masked_fill(empty, 0.0)
    return (states * weights.unsqueeze(-1).to(states.dtype)).sum(1)


class ProfileDistiller(nn.Module):
    """Pooling, transformation T and the reconstruction loss; owns their parameters."""

    def __init__(self, hidden: int, profile_dim: int, pooling: str = "mean", gamma: float = 0.1,
                 direction: str = "down", loss: str = "mse", multi_aggr: str = "mean") -> None:
        super().__init__()
        self.pooling, self.gamma, self.direction, self.loss_name, self.multi_aggr = pooling, gamma, direction, loss, multi_aggr
        if direction == "none" and hidden != profile_dim:
            raise ValueError(f"profile size {profile_dim} != hidden size {hidden}: set use_down_scale or use_upscale")
        self.attn = nn.Linear(hidden, 1) if pooling == "attention" else None
        self.transform = (nn.Linear(profile_dim, hidden) if direction == "down"
                          else nn.Linear(hidden, profile_dim) if direction == "up" else nn.Identity())
        self.profile_attn = nn.Linear(profile_dim, 1) if multi_aggr == "attention" else None

    def pool(self, states: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            return mean_pool(states, real)
        if self.pooling == "exp":
            return exp_pool(states, real, self.gamma)
        return weighted_pool(states, real, self.attn(states).squeeze(-1))

    def aggregate_profiles(self, profiles: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """[B, K, P] profiles with [B, K] presence -> [B, P] (mean or learned attention)."""
        if self.profile_attn is None:
            return mean_pool(profiles, present)
        return weighted_pool(profiles, present, self.profile_attn(profiles).squeeze(-1))

    def forward(self, states: torch.Tensor, real: torch.Tensor, profiles: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss over users with at least one profile; 0 if none in the batch."""
        has = present.any(1) & real.any(1)
        if not has.any():
            return states.sum() * 0.0  # keeps the graph (DDP) without a signal
        pooled = self.pool(states[has], real[has]).float()
        target = self.aggregate_profiles(profiles[has], present[has]).float()
        if self.direction == "down":
            target = self.transform(target)
        elif self.direction == "up":
            pooled = self.transform(pooled)
        if self.loss_name == "cosine":
            return (1 - F.cosine_similarity(pooled, target, dim=-1, eps=EPS)).mean()
        return F.mse_loss(pooled, target)


def combine(rec: torch.Tensor, distil: torch.Tensor, alpha: float, dynamic: bool) -> torch.Tensor:
    """alpha * beta * L_distil + (1 - alpha) * L_model, beta detached (no gradient through it)."""
    beta = (rec.detach() / (distil.detach() + EPS)) if dynamic else 1.0
    return alpha * beta * distil + (1 - alpha) * rec


class DistillLoss(nn.Module):
    """The training loss handed to ``core.train.fit``: L_model, plus L_distil until fine-tuning."""

    def __init__(self, distiller: ProfileDistiller, profiles: torch.Tensor, present: torch.Tensor, *,
                 alpha: float, dynamic_scaling: bool, layer: int, fine_tune_epoch: int) -> None:
        super().__init__()
        self.distiller = distiller
        # [n_users + 1, K, P] by 1-based user index; buffers so they follow .to(device)
        self.register_buffer("profiles", profiles, persistent=False)
        self.register_buffer("present", present, persistent=False)
        self.alpha, self.dynamic, self.layer, self.fine_tune_epoch = alpha, dynamic_scaling, layer, fine_tune_epoch
        self.distilling = True

    def set_epoch(self, epoch: int) -> None:
        """1-based epoch; the seed's rule: distil while epoch < fine_tune_epoch (0 = always)."""
        self.distilling = not self.fine_tune_epoch or epoch < self.fine_tune_epoch

    def forward(self, model, batch: dict, generator=None):
        inputs = batch["input"]
        hidden, layers = model(inputs, return_layers=True)
        seqs = torch.cat([inputs, batch["target"]], dim=1)
        rec = model.prediction_loss(model.project(hidden), batch["target"], seqs, generator)
        if not self.distilling:
            return {"loss": rec, "rec_loss": rec.detach()}
        real = inputs[:, -layers[self.layer].shape[1]:] > 0
        users = batch["users"]
        distil = self.distiller(layers[self.layer], real, self.profiles[users], self.present[users])
        return {"loss": combine(rec, distil, self.alpha, self.dynamic), "rec_loss": rec.detach(),
                "distill_loss": distil.detach()}

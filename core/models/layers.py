"""Small building blocks shared by several pipelines' models.

- ``grad_reverse``: the gradient reversal layer (GRL, Ganin & Lempitsky): identity forward,
  gradient multiplied by ``-lambd`` backward;
- ``masked_mean``: the mean of a sequence's states over its real (non-padding) positions.
"""
from __future__ import annotations

import torch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``-lambd`` backward."""
    return _GradReverse.apply(x, lambd)


def masked_mean(states: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, L, D] states, [B, L] bool (True = real position) -> [B, D] average over the real
    positions; a row without any gives zeros."""
    w = real.to(states.dtype)
    return (states * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)

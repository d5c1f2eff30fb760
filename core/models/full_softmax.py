"""The full-catalog softmax cross-entropy with its gradient computed in the forward pass.

Each chunk of rows scores the whole catalog once: the loss, the softmax and the gradient
``softmax - onehot`` come from that one logits block, which is then multiplied back into the
gradients of the hidden states and of the item table (and bias) and freed. Backward only
scales the stored gradients. Autograd over checkpointed chunks (forward, recomputed forward,
backward) needs one catalog matmul and two softmax passes more; against it a Beauty-sized loss
costs about 0.74x (benchmarks/README.md, "Stop 40").
"""
from __future__ import annotations

import math

import torch


class FusedFullSoftmax(torch.autograd.Function):
    """Mean cross-entropy of ``targets`` [N] over logits ``h @ weight.T (+ bias)`` with column 0
    (padding) excluded, computed ``rows`` rows at a time, in float32 whatever autocast says."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                rows: int) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            h32, w32 = h.float(), weight.float()
            b32 = bias.float() if bias is not None else None
            grad_h = torch.empty_like(h32)
            grad_w = torch.zeros_like(w32)
            grad_b = torch.zeros_like(b32) if b32 is not None and bias.requires_grad else None
            total = h32.new_zeros(())
            for start in range(0, len(h32), rows):
                part, target = h32[start:start + rows], targets[start:start + rows]
                logits = part @ w32.T
                if b32 is not None:
                    logits += b32
                logits[:, 0] = -math.inf
                lse = torch.logsumexp(logits, 1)
                picked = torch.arange(len(part), device=part.device)
                total += (lse - logits[picked, target]).sum()
                grad = logits.sub_(lse[:, None]).exp_()  # the softmax, in place of the logits
                grad[picked, target] -= 1
                grad_h[start:start + rows] = grad @ w32
                grad_w.addmm_(grad.T, part)
                if grad_b is not None:
                    grad_b += grad.sum(0)
        ctx.save_for_backward(grad_h, grad_w, *([grad_b] if grad_b is not None else []))
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.has_bias_grad = grad_b is not None
        return total / max(len(h32), 1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w, *rest = ctx.saved_tensors
        scale = grad_out / max(len(grad_h), 1)
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        grad_b = (rest[0] * scale).to(b_dtype) if ctx.has_bias_grad else None
        return (grad_h * scale).to(h_dtype), (grad_w * scale).to(w_dtype), grad_b, None, None


def fused_full_softmax(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                       rows: int) -> torch.Tensor:
    return FusedFullSoftmax.apply(h, weight, bias, targets, rows)

"""Transformer encoder blocks on ``scaled_dot_product_attention`` (fused kernels where present)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; with ``last_only`` only the last position queries: [B, 1, D]."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, attn_mask = q[:, :, -1:], attn_mask[:, :, -1:]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, q.shape[2], d))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, hidden: int, heads: int, dropout: float, ffn_mult: int = 4, activation: str = "gelu") -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = MultiHeadSelfAttention(hidden, heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_mult * hidden), act, nn.Dropout(dropout), nn.Linear(ffn_mult * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """With ``last_only`` the output is the last position's alone ([B, 1, D]): scoring needs
        no other, and the final block then skips L - 1 queries and FFN rows."""
        a = self.attn(self.ln1(x), attn_mask, last_only)
        x = (x[:, -1:] if last_only else x) + self.drop(a)
        return x + self.drop(self.ffn(self.ln2(x)))


def attention_mask(input_ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """[B, 1, L, L] bool, True where a query may attend to a key.

    Padding keys (id 0) are hidden from every query; with ``causal`` a query sees only
    earlier positions. Every position may attend to itself so fully padded query rows stay
    finite (their outputs are zeroed by the caller).
    """
    length = input_ids.shape[1]
    keep = (input_ids > 0)[:, None, None, :]
    if causal:
        keep = keep & torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
    return keep | eye

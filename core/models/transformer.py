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


def attention_mask(input_ids: torch.Tensor, causal: bool, empty_rows: str = "self") -> torch.Tensor:
    """[B, 1, L, L] bool, True where a query may attend to a key.

    Padding keys (id 0) are hidden from every query; with ``causal`` a query sees only
    earlier positions. A query row with no visible key (a padded position) attends to itself
    (``empty_rows="self"``: finite, and the caller zeroes it) or to every key
    (``"all"``: what an additive -10000 mask does, as in the BSARec authors' code).
    """
    length = input_ids.shape[1]
    keep = (input_ids > 0)[:, None, None, :]
    if causal:
        keep = keep & torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
    if empty_rows == "all":
        return keep | ~keep.any(-1, keepdim=True)
    eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
    return keep | eye


def low_pass_matrix(length: int, keep: int) -> torch.Tensor:
    """[length, length] real matrix P with ``P @ x`` = x (along positions) with every Fourier
    component above the first ``keep`` removed (orthonormal rfft -> zero -> irfft).

    A matrix rather than an FFT at run time: positions are right-aligned and trimmed batches
    drop leading all-zero columns, so the trimmed product ``P[-n:, -n:] @ x[-n:]`` equals the
    filter over the whole ``length`` window exactly.
    """
    spectrum = torch.fft.rfft(torch.eye(length, dtype=torch.float64), dim=0, norm="ortho")
    spectrum[keep:] = 0
    return torch.fft.irfft(spectrum, n=length, dim=0, norm="ortho").float()


class FrequencyMixBlock(nn.Module):
    """BSARec's layer (Shin et al., AAAI 2024): a Fourier low-pass / rescaled high-pass filter
    of the sequence (an inductive bias toward smooth preference drift) mixed with self-attention
    as ``alpha * filter + (1 - alpha) * attention``, then a feed-forward layer; post-LayerNorm
    residuals as in the paper's code. ``c`` is the paper's cut-off (``c // 2 + 1`` components
    are kept)."""

    def __init__(self, hidden: int, heads: int, dropout: float, maxlen: int, alpha: float, c: int) -> None:
        super().__init__()
        self.alpha = alpha
        self.register_buffer("low_pass", low_pass_matrix(maxlen, c // 2 + 1), persistent=False)
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, hidden))
        self.filter_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.attn = MultiHeadSelfAttention(hidden, heads, dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        length = x.shape[1]
        project = self.low_pass[-length:, -length:]
        query = x
        if last_only:
            project, query = project[-1:], x[:, -1:]
        low = torch.einsum("qk,bkd->bqd", project, x)
        filtered = self.filter_norm(self.drop(low + self.sqrt_beta ** 2 * (query - low)) + query)
        attended = self.attn_norm(self.drop(self.attn(x, attn_mask, last_only)) + query)
        mixed = self.alpha * filtered + (1 - self.alpha) * attended
        return self.ffn_norm(self.drop(self.ffn(mixed)) + mixed)

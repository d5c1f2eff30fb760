"""Per-type feature encoders and the registry of encoders for new feature types.

Every built-in encoder maps its gathered table rows (``{part: tensor}``, see
``universal.features``) to feature tokens ``[B, n_tokens, out_dim]``; a missing value never reads zeros
as if they were data, it reads a learned "missing" vector instead.

New feature types: a module ``module(x [B, input_dim]) -> [B, output_dim]`` over the numeric
values of each field of that type (a number or a fixed-length list of numbers), given

- in Python: ``pipeline.add_encoder("audio", MyEncoder(128, 64))`` (the instance is shared by
  every field of that type, in both towers), or
- in the config: ``custom_encoders: {audio: linear}`` with a name registered here in code
  (``register_encoder``, e.g. by the user's own script before it calls the training function),
  built as ``cls(input_dim, output_dim)``. A ``"package.module:ClassName"`` spec is imported only
  when the caller allowed that module (``allow_encoder_module``, the command line's
  ``--allow-encoder-module``): config and checkpoint text alone never cause an import, since
  importing runs the module's top-level code. Nothing is evaluated.
"""
from __future__ import annotations

import importlib
import re

import torch
from torch import nn

from core.errors import ConfigError


def mlp(dims: list[int], dropout: float = 0.0, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if n < len(dims) - 2 or last_act:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)


def _missing(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.02)


class TextEncoder(nn.Module):
    """Frozen sentence vectors [B, F, 384] -> a shared projection; one token, or one per field."""

    def __init__(self, n_fields: int, in_dim: int, out_dim: int, mean: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.missing = _missing(n_fields, out_dim)
        self.mean = mean
        self.n_tokens = 1 if mean else n_fields
        self.out_dim = out_dim

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        x = torch.where(f["present"].unsqueeze(-1), self.proj(f["x"]), self.missing)
        return x.mean(1, keepdim=True) if self.mean else x


class CategoricalEncoder(nn.Module):
    """One table per field (row 0 = unknown or missing); multi-valued fields average their rows."""

    def __init__(self, rows: list[int], out_dim: int, mean: bool, hidden: list[int]) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(r, out_dim) for r in rows)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.1)
        self.mlp = mlp([out_dim, *hidden, out_dim]) if hidden else nn.Identity()
        self.mean = mean
        self.n_tokens = 1 if mean else len(rows)
        self.out_dim = out_dim

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        idx, mask = f["idx"], f["mask"].unsqueeze(-1).to(torch.float32)
        tokens = [(t(idx[:, j]) * mask[:, j]).sum(1) / mask[:, j].sum(1).clamp(min=1.0) for j, t in enumerate(self.tables)]
        x = self.mlp(torch.stack(tokens, 1))
        return x.mean(1, keepdim=True) if self.mean else x


class ContinuousEncoder(nn.Module):
    """Normalized values and their presence flags -> MLP -> one token."""

    def __init__(self, n_fields: int, out_dim: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.net = mlp([2 * n_fields, *hidden, out_dim], dropout)
        self.n_tokens = 1
        self.out_dim = out_dim

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        present = f["present"].to(torch.float32)
        return self.net(torch.cat([f["x"] * present, present], -1)).unsqueeze(1)


class TemporalItemsEncoder(nn.Module):
    """A list of item ids read through the model's item id embeddings, mean- or max-pooled.

    ``ctx["exclude_items"]`` ([B] item rows) is removed from each list first: in training it is
    the item being predicted, so the feature never holds its own label."""

    def __init__(self, item_dim: int, out_dim: int, pooling: str) -> None:
        super().__init__()
        self.proj = nn.Linear(item_dim, out_dim) if item_dim != out_dim else nn.Identity()
        self.empty = _missing(out_dim)
        self.pooling = pooling
        self.n_tokens = 1
        self.out_dim = out_dim

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        ids = f["ids"]
        valid = ids > 0
        if ctx.get("exclude_items") is not None:
            valid &= ids != ctx["exclude_items"].view(-1, 1)
        emb = self.proj(ctx["item_table"](ids))
        count = valid.sum(1, keepdim=True)
        if self.pooling == "max_pooling":
            pooled = emb.masked_fill(~valid.unsqueeze(-1), -1e4).amax(1)
        else:
            pooled = (emb * valid.unsqueeze(-1)).sum(1) / count.clamp(min=1)
        return torch.where(count > 0, pooled, self.empty).unsqueeze(1)


class VectorEncoder(nn.Module):
    """A fixed-length numeric vector (series statistics, .npy image features) -> one token."""

    def __init__(self, in_dim: int, out_dim: int, hidden: list[int] | None = None) -> None:
        super().__init__()
        self.net = mlp([in_dim, *(hidden or []), out_dim])
        self.missing = _missing(out_dim)
        self.n_tokens = 1
        self.out_dim = out_dim

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        return torch.where(f["present"].unsqueeze(-1), self.net(f["x"]), self.missing).unsqueeze(1)


class ImageEncoder(nn.Module):
    """A small trainable CNN over RGB thumbnails (uint8 [B, 3, S, S]) -> one token."""

    def __init__(self, channels: list[int], out_dim: int) -> None:
        super().__init__()
        layers, prev = [], 3
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.ReLU()]
            prev = c
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, out_dim))
        self.missing = _missing(out_dim)
        self.n_tokens = 1
        self.out_dim = out_dim

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        x = f["x"].to(torch.float32) / 255.0 - 0.5
        return torch.where(f["present"].unsqueeze(-1), self.cnn(x), self.missing).unsqueeze(1)


class CustomEncoder(nn.Module):
    """Wraps a user module ``(x [B, in]) -> [B, out]`` with the missing-value vector."""

    def __init__(self, module: nn.Module, in_dim: int, where: str) -> None:
        super().__init__()
        self.module = module
        with torch.no_grad():
            try:
                out = module(torch.zeros(2, in_dim))
            except Exception as exc:  # a user module that does not fit the data's vectors
                raise ConfigError(f"encoder for {where}: calling it on [2, {in_dim}] inputs failed "
                                  f"({str(exc).splitlines()[0][:120]}); its input_dim must be {in_dim}") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
            raise ConfigError(f"encoder for {where}: must return a [batch, output_dim] tensor")
        self.out_dim = out.shape[1]
        self.missing = _missing(self.out_dim)
        self.n_tokens = 1

    def forward(self, f: dict, ctx: dict) -> torch.Tensor:
        return torch.where(f["present"].unsqueeze(-1), self.module(f["x"]), self.missing).unsqueeze(1)


# --------------------------------------------------------------------------- registry
class LinearEncoder(nn.Module):
    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.net = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPEncoder(nn.Module):
    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.net = mlp([input_dim, max(input_dim, output_dim), output_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


REGISTRY: dict[str, type] = {"linear": LinearEncoder, "mlp": MLPEncoder}
# modules the caller (code or the command line, never a config or checkpoint) allowed to be imported
ALLOWED_MODULES: set[str] = set()
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def register_encoder(name: str, cls: type) -> None:
    """Make ``cls`` (built as ``cls(input_dim, output_dim)``) nameable in ``custom_encoders``."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_encoder({name!r}): expected an nn.Module subclass")
    REGISTRY[name] = cls


def allow_encoder_module(module_name: str) -> None:
    """Let ``"module_name:ClassName"`` specs import ``module_name`` (an explicit opt-in in code or on
    the command line: the module's top-level code will run)."""
    if not _MODULE.match(module_name or ""):
        raise ConfigError(f"--allow-encoder-module {module_name!r}: expected a dotted module name such as mypkg.encoders")
    ALLOWED_MODULES.add(module_name)


def resolve_encoder(spec: str, where: str) -> type:
    """A registered name, or ``"package.module:ClassName"`` of an allowed module -> the nn.Module class."""
    if spec in REGISTRY:
        return REGISTRY[spec]
    if not _DOTTED.match(spec):
        raise ConfigError(f"{where}: {spec!r} is not a registered encoder ({', '.join(sorted(REGISTRY))}); "
                          "register it in code with universal.register_encoder(name, cls)")
    module_name, attr = spec.split(":")
    if module_name not in ALLOWED_MODULES:
        # checked before any import: the spec may come from a config or a checkpoint someone else wrote
        raise ConfigError(f"{where}: {spec!r} names a module that was not allowed, so it is not imported; "
                          f"register the class in code (universal.register_encoder) or pass "
                          f"--allow-encoder-module {module_name} if you trust that module")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r} ({exc}); check the path and PYTHONPATH") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}: {spec!r} is not an nn.Module class")
    return cls

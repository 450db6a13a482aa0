"""Time embedding shared by the reference networks, and the input/output plumbing they have in common.

BFN time ``t`` lies in [0, 1] (0 = prior, 1 = data). It is mapped to sinusoidal features of ``scale * t`` (as
in DDPM's position encoding of the diffusion step) and then through a two-layer SiLU MLP.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bfn._checks import check_data_shape, check_int

__all__ = ["LabelEmbedding", "TimeEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of ``scale * t``.

    Args:
        t: times, shape ``(B,)``.
        dim: number of features; the first half are cosines, the second half sines (odd ``dim`` gets a zero pad).
        scale: multiplier applied to ``t`` so that t in [0, 1] spans many periods of the fastest frequency.
        max_period: period of the slowest frequency, in units of ``scale * t``.

    Returns:
        ``(B, dim)`` features in the dtype of ``t``.
    """
    dim = check_int(dim, "dim")
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=t.dtype) / max(half, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    angles = (scale * t)[:, None] * freqs[None, :]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1)
    return features


class TimeEmbedding(nn.Module):
    """Learned embedding of BFN time: sinusoidal features followed by ``Linear -> SiLU -> Linear``.

    Shapes: ``t`` of shape ``(B,)`` (or a scalar, broadcast to ``batch_size``) -> ``(B, dim)``.
    """

    def __init__(self, dim: int, *, num_features: int | None = None, hidden: int | None = None) -> None:
        super().__init__()
        self.num_features = num_features or dim
        hidden = hidden or 4 * dim
        self.mlp = nn.Sequential(nn.Linear(self.num_features, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, t: Tensor) -> Tensor:
        """Embed times ``t`` of shape ``(B,)``; returns ``(B, dim)``."""
        return self.mlp(sinusoidal_embedding(t, self.num_features))


class LabelEmbedding(nn.Module):
    """Learned class embedding for class-conditional networks, added to the time embedding.

    ``num_classes + 1`` rows: labels ``0..C-1`` and the null label ``C`` (unconditional, used for classifier-free
    guidance). Shapes: ``labels`` ``(B,)`` long (or ``None``: all null) -> ``(B, dim)``.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes")
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor | None, batch_size: int) -> Tensor:
        """Embed ``labels`` (``None``: the null label for all ``batch_size`` rows); returns ``(B, dim)``."""
        if labels is None:
            labels = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=self.embedding.weight.device)
        if labels.shape != (batch_size,) or labels.dtype != torch.long:
            raise ValueError(f"labels must be a ({batch_size},) long tensor, got {tuple(labels.shape)} {labels.dtype}")
        return self.embedding(labels)


def add_label_embedding(emb: Tensor, module: LabelEmbedding | None, labels: Tensor | None) -> Tensor:
    """``emb`` plus the label embedding of a conditional network; an unconditional one refuses labels."""
    if module is None:
        if labels is not None:
            raise ValueError("labels given to an unconditional network (build it with num_classes=C)")
        return emb
    return emb + module(labels, emb.shape[0]).to(emb.dtype)


def prepare_time(t: Tensor | float, batch_size: int, like: Tensor) -> Tensor:
    """Return ``t`` as a ``(B,)`` tensor with the dtype and device of ``like``.

    Accepts a Python float, a 0-d tensor (broadcast to the batch) or a ``(B,)`` tensor; anything else is a
    ``ValueError``.
    """
    t = torch.as_tensor(t, device=like.device).to(dtype=like.dtype)
    if t.ndim == 0:
        return t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"t must have shape ({batch_size},) to match the batch, got {tuple(t.shape)}")
    return t


def prepare_inputs(inputs: Tensor, data_shape: tuple[int, ...], in_channels: int, dtype: torch.dtype) -> Tensor:
    """Check ``inputs`` against the network contract and return them as ``(B, *S, in_channels)`` in ``dtype``.

    Probability vectors (``in_channels > 1``) are rescaled to ``2 * theta - 1`` so that the network sees values
    in [-1, 1] centred on the uniform prior.
    """
    expected = (*data_shape, in_channels) if in_channels > 1 else tuple(data_shape)
    if inputs.ndim != len(expected) + 1 or tuple(inputs.shape[1:]) != expected:
        raise ValueError(f"expected inputs of shape (B, {', '.join(map(str, expected))}), got {tuple(inputs.shape)}")
    x = inputs.to(dtype)
    if in_channels > 1:
        return 2.0 * x - 1.0
    return x.unsqueeze(-1)


def finish_outputs(outputs: Tensor, out_channels: int, dtype: torch.dtype) -> Tensor:
    """Turn ``(B, *S, out_channels)`` network outputs into the contract's shape and the caller's ``dtype``.

    The trailing channel dimension is dropped when ``out_channels == 1``.
    """
    if out_channels == 1:
        outputs = outputs.squeeze(-1)
    return outputs.to(dtype)


def check_channels(data_shape: tuple[int, ...], in_channels: int, out_channels: int) -> tuple[int, ...]:
    """Validate the constructor arguments shared by every network; returns ``data_shape`` as a tuple of ints."""
    shape = check_data_shape(data_shape)
    check_int(in_channels, "in_channels")
    check_int(out_channels, "out_channels")
    return shape


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (used for output layers) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of ``module``'s parameters (the dtype the network computes in)."""
    return next(module.parameters()).dtype

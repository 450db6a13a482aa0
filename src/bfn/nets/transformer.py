"""A pre-LayerNorm Transformer encoder for sequences (text with K = 27 characters)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn._checks import check_int
from bfn.nets.embedding import (
    LabelEmbedding,
    TimeEmbedding,
    add_label_embedding,
    check_channels,
    finish_outputs,
    parameter_dtype,
    prepare_inputs,
    prepare_time,
    zero_module,
)

__all__ = ["Transformer"]


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention with ``scaled_dot_product_attention``. ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over all positions of ``x``."""
        b, length, width = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, D / heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, length, width))


class LocalMixing(nn.Module):
    """Depthwise 1-D convolution over ``kernel`` neighbouring tokens after a LayerNorm. ``(B, L, D) -> (B, L, D)``.

    Each feature channel gets its own ``kernel``-tap filter along the token axis (zero padding keeps the length), so
    every token sees its neighbours from the first step of training, without having to learn it through attention.
    """

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)

    def forward(self, x: Tensor) -> Tensor:
        """Mix each token's features with those of its neighbours."""
        return self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    """Pre-LN encoder block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP of width ``4 * D``.

    With ``conv_kernel > 0`` the block starts with a local branch, ``x + LocalMixing(x)``.
    """

    def __init__(self, width: int, heads: int, dropout: float, conv_kernel: int = 0) -> None:
        super().__init__()
        self.local = LocalMixing(width, conv_kernel) if conv_kernel else None
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to token features ``x`` of shape ``(B, L, D)``."""
        if self.local is not None:
            x = x + self.local(x)
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Time-conditioned bidirectional Transformer encoder (pre-LN) over the elements of a sequence.

    Each data element is a token: its input vector is projected to ``width``, a learned positional embedding and
    the time embedding are added to every token, then ``depth`` pre-LN blocks and a final LayerNorm follow. The
    output projection is zero-initialised, so a fresh network gives uniform logits.

    With ``conv_kernel = k > 0`` the network gets a local inductive bias: the input projection becomes a 1-D
    convolution over ``k`` neighbouring tokens and every block starts with a depthwise ``k``-tap convolution
    (:class:`LocalMixing`). Tokens are the elements of the flattened ``data_shape``, so for text the neighbours are
    the adjacent characters. Learned absolute positions alone leave a small network at the unigram level on a CPU
    budget (it must discover through attention which tokens are adjacent); with ``k = 5`` it uses the neighbouring
    characters from the start (BENCHMARKS.md, "Text recipe").

    Shapes (``data_shape = (L,)``; any shape works and is flattened to ``prod(S)`` tokens):

    - ``inputs``: ``(B, L, K)`` probabilities ``theta`` for ``in_channels = K > 1`` (fed as ``2 * theta - 1``),
      or ``(B, L)`` for ``in_channels == 1``.
    - ``t``: ``(B,)`` BFN time in [0, 1].
    - output: ``(B, L, out_channels)`` (``(B, L)`` if ``out_channels == 1``), in the dtype of ``inputs``.

    Args:
        data_shape: ``(L,)``, the sequence length.
        in_channels, out_channels: values per element in input and output (K and K for text).
        width: token feature width.
        depth: number of encoder blocks.
        heads: attention heads (must divide ``width``).
        dropout: dropout rate on attention weights and residual branches.
        num_classes: class-conditional network with this many classes (a label embedding, null label
            ``num_classes``, added to the time embedding); ``None``: unconditional.
        conv_kernel: odd width of the local convolutions (above); 0 (default) leaves them out.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        in_channels: int,
        out_channels: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        conv_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.data_shape = check_channels(data_shape, in_channels, out_channels)
        width, depth = check_int(width, "width"), check_int(depth, "depth")
        if conv_kernel < 0 or (conv_kernel and conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel must be 0 (no convolutions) or an odd number >= 1, got {conv_kernel}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_tokens = math.prod(self.data_shape)
        self.conv_kernel = conv_kernel
        self.in_proj: nn.Module = (
            nn.Conv1d(in_channels, width, conv_kernel, padding=conv_kernel // 2)
            if conv_kernel
            else nn.Linear(in_channels, width)
        )
        self.pos_embedding = nn.Parameter(torch.randn(self.num_tokens, width) * 0.02)
        self.time_embedding = TimeEmbedding(width)
        self.label_embedding = LabelEmbedding(num_classes, width) if num_classes is not None else None
        self.blocks = nn.ModuleList(Block(width, heads, dropout, conv_kernel) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.head = zero_module(nn.Linear(width, out_channels))

    def forward(self, inputs: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map ``inputs``, times ``t`` and (conditional networks) ``labels`` ``(B,)`` to the network output."""
        batch = inputs.shape[0]
        x = prepare_inputs(inputs, self.data_shape, self.in_channels, parameter_dtype(self))
        emb = self.time_embedding(prepare_time(t, batch, x))
        emb = add_label_embedding(emb, self.label_embedding, labels)
        tokens = x.reshape(batch, self.num_tokens, self.in_channels)
        h = self.in_proj(tokens.transpose(1, 2)).transpose(1, 2) if self.conv_kernel else self.in_proj(tokens)
        h = h + self.pos_embedding[None] + emb[:, None, :]
        for block in self.blocks:
            h = block(h)
        out = self.head(self.out_norm(h)).reshape(batch, *self.data_shape, self.out_channels)
        return finish_outputs(out, self.out_channels, inputs.dtype)

"""A compact DDPM/VDM-style U-Net for images (8x8 digits, 28x28 MNIST, 32x32 CIFAR-10)."""

from __future__ import annotations

from collections.abc import Sequence

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

__all__ = ["UNet"]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest number of groups <= ``max_groups`` that divides ``channels``."""
    groups = min(max_groups, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """``GroupNorm -> SiLU -> Conv``, add the projected time embedding, ``GroupNorm -> SiLU -> Dropout -> Conv``,
    plus a (1x1-projected) skip connection. ``(B, C_in, H, W), (B, T) -> (B, C_out, H, W)``."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block to features ``x`` conditioned on the time embedding ``emb``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the ``H * W`` positions of ``x``."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, HW, C / heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Strided 3x3 convolution halving the resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Halve the spatial size of ``x``."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2 followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Double the spatial size of ``x``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The residual (and optional attention) blocks of one resolution in the U-Net."""

    def __init__(
        self, channels: Sequence[tuple[int, int]], time_dim: int, dropout: float, attention: bool, heads: int
    ) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(i, o, time_dim, dropout) for i, o in channels)
        self.attn = nn.ModuleList(AttentionBlock(o, heads) if attention else nn.Identity() for _, o in channels)


class UNet(nn.Module):
    """Time-conditioned U-Net in the style of DDPM / VDM.

    Residual blocks (GroupNorm + SiLU, time embedding added in every block), optional self-attention at the
    listed resolutions, a middle block with attention, strided-convolution down-sampling and nearest-neighbour
    up-sampling, skip connections from every block of the down path. The output convolution is zero-initialised.

    Per-element channels are folded into the convolution channels: the network sees ``C * in_channels`` input
    channels and produces ``C * out_channels`` channels, unfolded into a trailing dimension. Images whose side is
    not divisible by ``2 ** (len(channel_mults) - 1)`` are zero-padded (after the ``2 * theta - 1`` rescaling)
    and the output is cropped back, so 8x8, 28x28 and 32x32 images all work with any depth.

    Shapes (``data_shape = (C, H, W)``):

    - ``inputs``: ``(B, C, H, W)`` for ``in_channels == 1``; ``(B, C, H, W, K)`` probabilities ``theta`` for
      ``in_channels = K > 1`` (fed as ``2 * theta - 1``).
    - ``t``: ``(B,)`` BFN time in [0, 1].
    - output: ``(B, C, H, W)`` if ``out_channels == 1`` else ``(B, C, H, W, out_channels)``, dtype of ``inputs``.

    Args:
        data_shape: ``(C, H, W)``.
        in_channels, out_channels: values per data element in input and output.
        base: channels at the first resolution.
        channel_mults: channel multiplier per resolution; ``len(channel_mults) - 1`` down-sampling steps.
        num_res_blocks: residual blocks per resolution on the down path (the up path has one more).
        attention_resolutions: feature-map sides (after padding) at which to add self-attention, e.g. ``(16,)``.
        dropout: dropout rate inside residual blocks.
        attention_heads: heads of every attention block.
        mid_attention: put self-attention in the middle block.
        num_classes: class-conditional network with this many classes (a label embedding, null label
            ``num_classes``, added to the time embedding); ``None``: unconditional.
    """

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        in_channels: int,
        out_channels: int,
        base: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        attention_heads: int = 1,
        mid_attention: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        shape = check_channels(data_shape, in_channels, out_channels)
        if len(shape) != 3:
            raise ValueError(f"UNet needs data_shape (C, H, W), got {data_shape!r}")
        base, num_res_blocks = check_int(base, "base"), check_int(num_res_blocks, "num_res_blocks")
        if not channel_mults:
            raise ValueError("UNet needs at least one channel multiplier")
        self.data_shape = shape
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.multiple = 2 ** (len(channel_mults) - 1)
        time_dim = 4 * base
        self.time_embedding = TimeEmbedding(time_dim, num_features=base)
        self.label_embedding = LabelEmbedding(num_classes, time_dim) if num_classes is not None else None
        self.in_conv = nn.Conv2d(shape[0] * in_channels, base, 3, padding=1)

        side = -(-max(shape[1:]) // self.multiple) * self.multiple
        attention_at = set(attention_resolutions)
        ch = base
        skips = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, mult in enumerate(channel_mults):
            pairs = []
            for _ in range(num_res_blocks):
                pairs.append((ch, base * mult))
                ch = base * mult
                skips.append(ch)
            self.down.append(Level(pairs, time_dim, dropout, side in attention_at, attention_heads))
            last = i == len(channel_mults) - 1
            self.downsample.append(nn.Identity() if last else Downsample(ch))
            if not last:
                skips.append(ch)
                side //= 2

        self.mid_res1 = ResBlock(ch, ch, time_dim, dropout)
        self.mid_attn = AttentionBlock(ch, attention_heads) if mid_attention else nn.Identity()
        self.mid_res2 = ResBlock(ch, ch, time_dim, dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            pairs = []
            for _ in range(num_res_blocks + 1):
                pairs.append((ch + skips.pop(), base * mult))
                ch = base * mult
            self.up.append(Level(pairs, time_dim, dropout, side in attention_at, attention_heads))
            self.upsample.append(Upsample(ch) if i > 0 else nn.Identity())
            if i > 0:
                side *= 2

        self.out_norm = group_norm(ch)
        self.out_conv = zero_module(nn.Conv2d(ch, shape[0] * out_channels, 3, padding=1))

    def forward(self, inputs: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map ``inputs``, times ``t`` and (conditional networks) ``labels`` ``(B,)`` to the network output."""
        c, height, width = self.data_shape
        batch = inputs.shape[0]
        x = prepare_inputs(inputs, self.data_shape, self.in_channels, parameter_dtype(self))
        x = x.movedim(-1, 2).reshape(batch, c * self.in_channels, height, width)
        pad_h = -height % self.multiple
        pad_w = -width % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        emb = self.time_embedding(prepare_time(t, batch, x))
        emb = add_label_embedding(emb, self.label_embedding, labels)

        h = self.in_conv(x)
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb))
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)
        for level, up in zip(self.up, self.upsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
            h = up(h)

        out = self.out_conv(F.silu(self.out_norm(h)))[:, :, :height, :width]
        out = out.reshape(batch, c, self.out_channels, height, width).movedim(2, -1)
        return finish_outputs(out, self.out_channels, inputs.dtype)

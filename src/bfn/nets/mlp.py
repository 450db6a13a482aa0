"""A fully connected network for low-dimensional data (2-D toy sets, 8x8 digits)."""

from __future__ import annotations

import math

import torch
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

__all__ = ["MLP"]


class MLP(nn.Module):
    """Time-conditioned multilayer perceptron.

    The input is flattened, concatenated with a learned time embedding (:class:`TimeEmbedding`) and passed
    through ``depth`` hidden layers ``Linear -> [LayerNorm] -> SiLU``; the output layer is zero-initialised,
    so a fresh network predicts ``eps = 0`` (continuous), ``(0, 0)`` (discretised) or uniform logits (discrete).

    Shapes (``S = data_shape``):

    - ``in_channels == 1``: ``inputs`` ``(B, *S)``; ``in_channels = K > 1``: ``(B, *S, K)`` probabilities
      ``theta``, fed to the layers as ``2 * theta - 1``.
    - ``t``: ``(B,)`` BFN time in [0, 1] (cast to the network's dtype).
    - output: ``(B, *S)`` if ``out_channels == 1`` else ``(B, *S, out_channels)``, in the dtype of ``inputs``.

    Args:
        data_shape: shape of one data item, without batch and class dimensions, e.g. ``(2,)`` or ``(1, 8, 8)``.
        in_channels: values per data element in the input (1, or K class probabilities).
        out_channels: values per data element in the output.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        time_dim: width of the time embedding.
        layer_norm: insert a LayerNorm before each hidden activation.
        num_classes: class-conditional network with this many classes (a label embedding, null label
            ``num_classes``, added to the time embedding); ``None``: unconditional.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        in_channels: int,
        out_channels: int,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        layer_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = check_channels(data_shape, in_channels, out_channels)
        hidden, depth, time_dim = (
            check_int(hidden, "hidden"),
            check_int(depth, "depth"),
            check_int(time_dim, "time_dim"),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        num_elements = math.prod(self.data_shape)
        self.time_embedding = TimeEmbedding(time_dim)
        self.label_embedding = LabelEmbedding(num_classes, time_dim) if num_classes is not None else None
        layers: list[nn.Module] = []
        width = num_elements * in_channels + time_dim
        for _ in range(depth):
            layers.append(nn.Linear(width, hidden))
            if layer_norm:
                layers.append(nn.LayerNorm(hidden))
            layers.append(nn.SiLU())
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = zero_module(nn.Linear(hidden, num_elements * out_channels))

    def forward(self, inputs: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map ``inputs``, times ``t`` and (conditional networks) ``labels`` ``(B,)`` to the network output."""
        batch = inputs.shape[0]
        x = prepare_inputs(inputs, self.data_shape, self.in_channels, parameter_dtype(self))
        emb = self.time_embedding(prepare_time(t, batch, x))
        emb = add_label_embedding(emb, self.label_embedding, labels)
        h = self.body(torch.cat([x.reshape(batch, -1), emb], dim=-1))
        out = self.head(h).reshape(batch, *self.data_shape, self.out_channels)
        return finish_outputs(out, self.out_channels, inputs.dtype)

"""Negative log-likelihoods in nats -> bits per dimension (images) or bits per character (text)."""

from __future__ import annotations

import math
import operator
from typing import TypeVar

import torch

Value = TypeVar("Value", float, torch.Tensor)


def bits_per_dim(nll_nats: Value, num_dims: int) -> Value:
    """``nll_nats / (num_dims * ln 2)``: a per-example NLL in nats over ``num_dims`` data elements, in bits each.

    ``num_dims`` is the number of data elements per example (``C * H * W`` for images, the sequence length for text,
    where the result is bits per character). Works elementwise on tensors (any shape) and on Python floats.
    """
    try:
        dims = operator.index(num_dims)
    except TypeError:
        dims = 0
    if isinstance(num_dims, bool) or dims <= 0:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    return nll_nats / (dims * math.log(2.0))

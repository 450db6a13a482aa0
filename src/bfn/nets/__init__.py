"""Reference networks for Bayesian Flow Networks.

Every network is an ``nn.Module`` called as ``net(inputs, t)`` with ``t`` of shape ``(B,)``, BFN time in [0, 1]
(0 = prior, 1 = data); built with ``num_classes=C`` it is class-conditional, ``net(inputs, t, labels)`` with
``labels`` ``(B,)`` long in ``0..C`` (``C`` = the null label, for classifier-free guidance).
It is built from ``data_shape`` (one data item, without batch and class dimensions),
``in_channels`` and ``out_channels`` (values per data element); a tensor has a trailing channel dimension iff
its channel count is > 1:

====================  ===========  ============  ====================  ====================
flow                  in_channels  out_channels  inputs                outputs
====================  ===========  ============  ====================  ====================
continuous            1            1             ``(B, *S)`` mean      ``(B, *S)`` noise
discretised           1            2             ``(B, *S)`` mean      ``(B, *S, 2)``
discrete, K classes   K            K             ``(B, *S, K)`` theta  ``(B, *S, K)`` logits
====================  ===========  ============  ====================  ====================

Probability inputs (``in_channels > 1``) are rescaled to ``2 * theta - 1`` inside the network. Output layers
are zero-initialised. The networks compute in their parameters' dtype (``net.double()`` for float64) and return
the dtype of ``inputs``; ``t`` is cast as needed.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from bfn.nets.embedding import TimeEmbedding, sinusoidal_embedding
from bfn.nets.mlp import MLP
from bfn.nets.transformer import Transformer
from bfn.nets.unet import UNet

__all__ = ["MLP", "NETS", "NetName", "TimeEmbedding", "Transformer", "UNet", "build_net", "sinusoidal_embedding"]

NetName = Literal["mlp", "unet", "transformer"]

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet, "transformer": Transformer}
"""Registry of the reference networks by name."""


def build_net(
    name: NetName, data_shape: tuple[int, ...], in_channels: int, out_channels: int, **options: Any
) -> nn.Module:
    """Build a reference network by name.

    Args:
        name: one of ``"mlp"``, ``"unet"``, ``"transformer"`` (keys of :data:`NETS`).
        data_shape: shape of one data item without batch and class dimensions.
        in_channels, out_channels: values per data element (see the module docstring).
        **options: keyword arguments of the network class, e.g. ``hidden=128`` for the MLP.

    The returned module carries ``net_spec = {"name": ..., "options": ...}``, which
    :meth:`bfn.BFN.save_pretrained` stores so that :meth:`bfn.BFN.from_pretrained` can rebuild the network.

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    try:
        cls = NETS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(sorted(NETS))}") from None
    net = cls(tuple(data_shape), in_channels, out_channels, **options)
    net.net_spec = {"name": name, "options": dict(options)}  # lets BFN.save_pretrained rebuild it
    return net

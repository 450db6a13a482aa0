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

import inspect
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from bfn._checks import check_bool, check_data_shape, check_int, check_real
from bfn.nets.embedding import TimeEmbedding, sinusoidal_embedding
from bfn.nets.mlp import MLP
from bfn.nets.transformer import Transformer
from bfn.nets.unet import UNet

__all__ = [
    "MLP",
    "NETS",
    "NetName",
    "NetSpec",
    "TimeEmbedding",
    "Transformer",
    "UNet",
    "build_net",
    "check_net_options",
    "net_spec",
    "sinusoidal_embedding",
]

NetName = Literal["mlp", "unet", "transformer"]

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet, "transformer": Transformer}
"""Registry of the reference networks by name."""

MAX_NET_SIZE = 2**20
"""Largest integer network option (width, depth, heads, ...) and channel count :func:`build_net` accepts."""


def check_net_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Refuse an unknown network, unknown options and values whose type differs from the option's default.

    Integers (Python or numpy, not bool) above :data:`MAX_NET_SIZE`, strings for numbers and numbers for flags are
    refused with a ``ValueError`` naming the option; returns the options with numpy scalars made Python numbers.
    """
    if not isinstance(name, str) or name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(sorted(NETS))}")
    if not isinstance(options, dict):
        raise ValueError(f"network options must be a dict, got {type(options).__name__}")
    cls = NETS[name]
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not p.empty}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for network {name!r}; valid options: {sorted(params)}")
    checked = dict(options)
    for key, value in options.items():
        default, what = params[key].default, f"{name} option {key}"
        if isinstance(default, bool):
            checked[key] = check_bool(value, what)
        elif isinstance(default, int):
            checked[key] = check_int(value, what, minimum=None, maximum=MAX_NET_SIZE)
        elif isinstance(default, float):
            checked[key] = check_real(value, what)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return checked


@dataclass(frozen=True)
class NetSpec:
    """What rebuilds a reference network: its name in :data:`NETS` and its constructor options.

    The options are checked (:func:`check_net_options`) when the spec is made, so a spec always builds, and kept
    in their JSON form (tuples become lists, as after a round trip through ``config.json``). ``to_dict`` /
    ``from_dict`` give the ``"net"`` entry of a model's ``config.json`` (``{"name": ..., "options": {...}}``).
    """

    name: NetName
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked = check_net_options(self.name, dict(self.options))
        json_form = {k: list(v) if isinstance(v, tuple) else v for k, v in checked.items()}
        object.__setattr__(self, "options", json_form)

    def build(self, data_shape: tuple[int, ...], in_channels: int, out_channels: int) -> nn.Module:
        """The network for one data item's shape and the flow's channel counts (see :func:`build_net`)."""
        net = NETS[self.name](*_check_sizes(data_shape, in_channels, out_channels), **self.options)
        return self.record(net)

    def record(self, net: nn.Module) -> nn.Module:
        """Record this spec as the one ``net`` was built from (:func:`net_spec` reads it back); returns ``net``.

        :meth:`build` records every network it builds; whoever copies a network (e.g. an EMA copy of its
        weights) records the copy the same way.
        """
        _BUILT[net] = self
        return net

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}``, JSON-able."""
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NetSpec:
        """Read :meth:`to_dict` output (``options`` may be missing or ``None``: the network's defaults)."""
        if not isinstance(values, Mapping) or "name" not in values:
            raise ValueError(f"a network spec must be a dict with a 'name' (and 'options'), got {values!r}")
        options = values.get("options") or {}
        if not isinstance(options, Mapping):
            raise ValueError(f"network options must be a dict, got {type(options).__name__}")
        return cls(values["name"], dict(options))


_BUILT: weakref.WeakKeyDictionary[nn.Module, NetSpec] = weakref.WeakKeyDictionary()
"""The spec of every network :meth:`NetSpec.build` made (or :meth:`NetSpec.record` was given), while it lives."""


def net_spec(net: Any) -> NetSpec | None:
    """The :class:`NetSpec` ``net`` was built from by :func:`build_net` (``None`` for a network built otherwise)."""
    try:
        return _BUILT.get(net)
    except TypeError:  # not weak-referenceable: never recorded
        return None


def build_net(
    name: NetName, data_shape: tuple[int, ...], in_channels: int, out_channels: int, **options: Any
) -> nn.Module:
    """Build a reference network by name.

    Args:
        name: one of ``"mlp"``, ``"unet"``, ``"transformer"`` (keys of :data:`NETS`).
        data_shape: shape of one data item without batch and class dimensions.
        in_channels, out_channels: values per data element (see the module docstring).
        **options: keyword arguments of the network class, e.g. ``hidden=128`` for the MLP.

    The spec the network was built from (:class:`NetSpec`) is recorded for it: :func:`net_spec` reads it back,
    and :meth:`bfn.BFN.save_pretrained` stores it so that :meth:`bfn.BFN.from_pretrained` can rebuild the network.

    Raises:
        ValueError: for an unknown name (the message lists the valid names), an unknown option (it lists the
            valid options) or an option value of the wrong type (integers, reals and booleans are checked against
            the type of the option's default; sizes above ``MAX_NET_SIZE`` are refused).
    """
    if not isinstance(name, str) or name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(sorted(NETS))}")
    sizes = _check_sizes(data_shape, in_channels, out_channels)  # the sizes first, then the options
    return NetSpec(name, options).build(*sizes)


def _check_sizes(data_shape: Any, in_channels: Any, out_channels: Any) -> tuple[tuple[int, ...], int, int]:
    return (
        check_data_shape(data_shape),
        check_int(in_channels, "in_channels", maximum=MAX_NET_SIZE),
        check_int(out_channels, "out_channels", maximum=MAX_NET_SIZE),
    )

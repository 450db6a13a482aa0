"""One module per data kind; each owns all of that kind's maths (schedules, updates, losses, SDE view) and every
other kind-specific choice (sampling defaults, decoding, conditioning, data scaling), behind :class:`Flow`."""

from collections.abc import Mapping
from types import MappingProxyType

from bfn.flows.base import KINDS, AutoChoice, Flow, FlowKind, LinearSDE, SamplingDefaults
from bfn.flows.continuous import ContinuousFlow, ContinuousSDE
from bfn.flows.discrete import DiscreteFlow, DiscreteSDE
from bfn.flows.discretised import DiscretisedFlow

FLOWS: dict[str, type[Flow]] = {cls.kind: cls for cls in (ContinuousFlow, DiscretisedFlow, DiscreteFlow)}
"""The flow class of each data kind (:data:`KINDS`, in that order)."""

DEFAULT_ETA: Mapping[str, float] = MappingProxyType({kind: cls.sampling.eta for kind, cls in FLOWS.items()})
"""Default end offset ``eta`` per data kind (each flow's ``sampling.eta``; see :class:`SamplingDefaults`).

Shared by the samplers (grids start at ``t = 1 - eta``, i.e. the first network call is at ``tau = eta``) and the
PF-ODE likelihood (truncation at ``t_max = 1 - eta``); evaluate a likelihood with the ``eta`` of the sampler it
describes."""


def flow_type(kind: str) -> type[Flow]:
    """The flow class of ``kind`` (:data:`FLOWS`); ``ValueError`` naming the valid kinds otherwise."""
    if not isinstance(kind, str) or kind not in FLOWS:
        raise ValueError(f"unknown flow kind {kind!r}; expected one of {sorted(FLOWS)}")
    return FLOWS[kind]


def flow_from_config(kind: str, config: dict) -> Flow:
    """Rebuild a flow from its kind and :meth:`Flow.config` (as stored in checkpoints)."""
    cls = flow_type(kind)
    if not isinstance(config, Mapping):
        raise ValueError(f"flow config must be a dict of constructor arguments, got {type(config).__name__}")
    valid = list(cls.config_keys())
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(f"unknown {kind} flow config key(s) {unknown}; valid keys: {valid}")
    return cls(**config)


__all__ = [
    "DEFAULT_ETA",
    "FLOWS",
    "KINDS",
    "AutoChoice",
    "ContinuousFlow",
    "ContinuousSDE",
    "DiscreteFlow",
    "DiscreteSDE",
    "DiscretisedFlow",
    "Flow",
    "FlowKind",
    "LinearSDE",
    "SamplingDefaults",
    "flow_from_config",
    "flow_type",
]

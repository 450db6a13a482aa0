"""One module per data kind; each owns all of that kind's maths (schedules, updates, losses, SDE view)."""

import inspect
from collections.abc import Mapping

from bfn.flows.base import Flow, FlowKind, LinearSDE
from bfn.flows.continuous import ContinuousFlow, ContinuousSDE
from bfn.flows.discrete import DiscreteFlow, DiscreteSDE
from bfn.flows.discretised import DiscretisedFlow

FLOWS: dict[str, type[Flow]] = {
    "continuous": ContinuousFlow,
    "discretised": DiscretisedFlow,
    "discrete": DiscreteFlow,
}


def flow_from_config(kind: str, config: dict) -> Flow:
    """Rebuild a flow from its kind and :meth:`Flow.config` (as stored in checkpoints)."""
    if not isinstance(kind, str) or kind not in FLOWS:
        raise ValueError(f"unknown flow kind {kind!r}; expected one of {sorted(FLOWS)}")
    if not isinstance(config, Mapping):
        raise ValueError(f"flow config must be a dict of constructor arguments, got {type(config).__name__}")
    valid = [name for name in inspect.signature(FLOWS[kind]).parameters if name != "self"]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(f"unknown {kind} flow config key(s) {unknown}; valid keys: {valid}")
    return FLOWS[kind](**config)


__all__ = [
    "FLOWS",
    "ContinuousFlow",
    "ContinuousSDE",
    "DiscreteFlow",
    "DiscreteSDE",
    "DiscretisedFlow",
    "Flow",
    "FlowKind",
    "LinearSDE",
    "flow_from_config",
]

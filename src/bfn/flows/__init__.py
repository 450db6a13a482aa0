"""One module per data kind; each owns all of that kind's maths (schedules, updates, losses, SDE view)."""

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
    if kind not in FLOWS:
        raise ValueError(f"unknown flow kind {kind!r}; expected one of {sorted(FLOWS)}")
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

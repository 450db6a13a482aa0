"""Model folders: the model section of ``config.json`` (:class:`ModelConfig`), ``save_pretrained`` and
``load_pretrained``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from bfn._checks import check_data_shape
from bfn.checkpoint.files import (
    CONFIG_FILE,
    EMA_FILE,
    FORMAT_VERSION,
    MODEL_FILE,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    load_safetensors,
    read_config,
    safetensors_bytes,
)
from bfn.checkpoint.state import find_checkpoint, verified_checkpoint
from bfn.flows import Flow, flow_from_config
from bfn.nets import NetSpec, net_spec

if TYPE_CHECKING:
    from bfn.model import BFN

__all__ = ["ModelConfig", "build_model", "load_pretrained", "save_pretrained"]


@dataclass(frozen=True)
class ModelConfig:
    """The model section of ``config.json``: everything :meth:`build` needs to rebuild a :class:`~bfn.BFN`.

    The one producer (:meth:`to_dict`) and reader (:meth:`from_dict`, :meth:`read`) of that section, for model
    folders (:func:`save_pretrained`, :func:`load_pretrained`), run folders (:func:`bfn.training.train`) and the
    command line. The JSON layout::

        {"format": "bfn", "version": 1,
         "flow": {"kind": "discretised", "config": {"num_bins": 17, "sigma_1": 0.02}},
         "data_shape": [1, 8, 8],
         "net": {"name": "mlp", "options": {"hidden": 256, "depth": 3}},
         "num_classes": 10, "label_dropout": 0.1}

    (the last two for class-conditional models only; ``format``, ``version`` and the network options may be absent
    in files written by hand).

    Attributes:
        flow: the flow, stored as its kind and :meth:`~bfn.flows.Flow.config` and rebuilt by
            :func:`~bfn.flows.flow_from_config`.
        data_shape: shape of one data item (without batch and class dimensions).
        net: the network's name and options (:class:`~bfn.nets.NetSpec`).
        num_classes: classes of a class-conditional model (``None``: unconditional).
        label_dropout: share of labels a class-conditional model's loss replaces by the null label.
    """

    flow: Flow
    data_shape: tuple[int, ...]
    net: NetSpec
    num_classes: int | None = None
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.flow, Flow):
            raise ValueError(f"ModelConfig.flow must be a Flow, got {type(self.flow).__name__}")
        if not isinstance(self.net, NetSpec):
            raise ValueError(f"ModelConfig.net must be a NetSpec, got {type(self.net).__name__}")
        object.__setattr__(self, "data_shape", check_data_shape(self.data_shape))

    @classmethod
    def of(cls, model: BFN, net: NetSpec | None = None) -> ModelConfig:
        """The config of ``model``; its network spec is ``net`` or the one :func:`bfn.nets.build_net` recorded.

        Raises ``ValueError`` when neither gives one (a network built by hand).
        """
        spec = net if net is not None else net_spec(model.net)
        if spec is None:
            raise ValueError("the network records no NetSpec (it was not built by bfn.nets.build_net); pass one")
        if model.num_classes is None:
            return cls(model.flow, tuple(model.data_shape), spec)
        return cls(model.flow, tuple(model.data_shape), spec, model.num_classes, model.label_dropout)

    def to_dict(self) -> dict[str, Any]:
        """The model section as a JSON-able dict (the layout in the class docstring)."""
        out: dict[str, Any] = {
            "format": "bfn",
            "version": FORMAT_VERSION,
            "flow": {"kind": self.flow.kind, "config": self.flow.config()},
            "data_shape": list(self.data_shape),
            "net": self.net.to_dict(),
        }
        if self.num_classes is not None:
            out.update(num_classes=self.num_classes, label_dropout=self.label_dropout)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Read a model section (:meth:`to_dict` output, or a whole ``config.json``: other entries are ignored).

        Raises ``ValueError`` naming the entry that is missing or invalid.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"a model config must be a JSON object, got {type(values).__name__}")
        for key in ("flow", "data_shape", "net"):
            if key not in values:
                raise ValueError(f"missing the {key!r} entry; not a bfn model or run folder")
        flow = values["flow"]
        if not isinstance(flow, Mapping) or "kind" not in flow:
            raise ValueError(f"the 'flow' entry must hold 'kind' and 'config', got {flow!r}")
        conditional = {k: values[k] for k in ("num_classes", "label_dropout") if values.get(k) is not None}
        return cls(
            flow_from_config(flow["kind"], dict(flow.get("config") or {})),
            tuple(values["data_shape"]),
            NetSpec.from_dict(values["net"]),
            **conditional,
        )

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> ModelConfig:
        """The model section of a model or run folder's ``config.json`` (:class:`CheckpointError` naming the file)."""
        values = read_config(folder)
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{Path(folder) / CONFIG_FILE}: {err}") from err

    def build(self) -> BFN:
        """A freshly initialised :class:`~bfn.BFN` (the network from :meth:`NetSpec.build` with the flow's channel
        counts; draws from torch's default generator)."""
        from bfn.model import BFN

        net = self.net.build(self.data_shape, self.flow.input_channels, self.flow.output_channels)
        if self.num_classes is None:
            return BFN(net, self.flow, self.data_shape)
        return BFN(net, self.flow, self.data_shape, num_classes=self.num_classes, label_dropout=self.label_dropout)


def build_model(config: ModelConfig | Mapping[str, Any]) -> BFN:
    """Build a freshly initialised :class:`~bfn.BFN` from a :class:`ModelConfig` or its dict form.

    The network comes from :func:`bfn.nets.build_net` with the flow's channel counts, so
    :meth:`~bfn.BFN.save_pretrained` finds its spec again.
    """
    return (config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)).build()


def save_pretrained(
    model: BFN,
    folder: str | os.PathLike[str],
    *,
    net_name: str | None = None,
    net_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (atomically) so :func:`load_pretrained` can rebuild ``model``.

    The network must be a reference network (:func:`bfn.nets.build_net`); its name and options come from
    ``net_name``/``net_options`` or from the spec ``build_net`` recorded (:func:`bfn.nets.net_spec`). Returns the
    folder.
    """
    spec = NetSpec(net_name, dict(net_options or {})) if net_name is not None else net_spec(model.net)  # type: ignore[arg-type]
    if spec is None:
        raise ValueError(
            "save_pretrained needs the network's name and options to rebuild it: build the network with "
            "bfn.nets.build_net, or pass net_name= (and net_options=) of a reference network"
        )
    if not isinstance(model.net, nn.Module):
        raise ValueError("save_pretrained needs an nn.Module network")
    config = ModelConfig.of(model, spec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / MODEL_FILE, safetensors_bytes(model.net.state_dict()))
    atomic_write_json(folder / CONFIG_FILE, config.to_dict())
    return folder


def _weights_file(folder: Path, ema: bool) -> Path:
    """The weights to load from a model folder or run folder (EMA weights first when ``ema``)."""
    names = [EMA_FILE, MODEL_FILE] if ema else [MODEL_FILE]
    places = [folder]
    checkpoint = find_checkpoint(folder)
    if checkpoint is not None:
        places.append(checkpoint)
    for name in names:
        for place in places:
            if (place / name).is_file():
                return place / name
    raise CheckpointError(f"{folder}: no {' or '.join(names)} in {' or '.join(str(p) for p in places)}")


def load_pretrained(folder: str | os.PathLike[str], map_location: str | torch.device = "cpu", ema: bool = True) -> BFN:
    """Rebuild a :class:`~bfn.BFN` from a model folder or a run folder; never executes pickled code.

    The network is rebuilt by name (:func:`bfn.nets.build_net`) and the flow by :func:`bfn.flows.flow_from_config`;
    weights come from ``safetensors`` files: EMA weights when ``ema`` and present, else the raw weights. A run
    folder's checkpoint is verified against its ``state.json`` first. The model is returned in eval mode.
    """
    folder = Path(folder)
    config = ModelConfig.read(folder)
    checkpoint = find_checkpoint(folder)
    path = _weights_file(folder, ema)
    if checkpoint is not None and path.parent == checkpoint:
        checkpoint, _ = verified_checkpoint(folder)
        path = checkpoint / path.name
    model = config.build()
    _load_net_state(model.net, load_safetensors(path), path)
    return model.to(map_location).eval()


def _load_net_state(net: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the network described in config.json: {err}") from err

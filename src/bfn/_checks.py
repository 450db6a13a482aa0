"""Argument checks shared by the public entry points: each raises ``ValueError`` naming the argument and the limit.

The checks read a value before anything touches it, so bad input fails with one clear message instead of an
``AttributeError`` / ``IndexError`` from inside torch or an allocation that never ends. Integers may be Python or
numpy integers (anything registered as :class:`numbers.Integral`) but never ``bool``; reals may be any
:class:`numbers.Real` but never ``bool``; neither is coerced from strings or floats.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MAX_DATA_ELEMENTS",
    "MAX_NUM_SAMPLES",
    "MAX_REPEATS",
    "MAX_STEPS",
    "MissingExtraError",
    "NonFiniteError",
    "check_batch",
    "check_bool",
    "check_data_shape",
    "check_dtype",
    "check_eta",
    "check_finite_output",
    "check_generator",
    "check_int",
    "check_real",
    "require_extra",
]

MAX_STEPS = 10**7
"""Largest number of steps (loss ``n``, sampler and ODE steps) accepted."""
MAX_NUM_SAMPLES = 10**9
"""Largest number of samples one call may draw."""
MAX_REPEATS = 10**6
"""Largest Monte-Carlo repeat count (``samples``, ``mc_samples``)."""
MAX_DATA_ELEMENTS = 2**40
"""Largest number of elements of one example (``prod(data_shape)``)."""


class MissingExtraError(ImportError):
    """An optional dependency a command needs is not installed; the message names the extra to install."""


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` (before any work) when ``module`` of the ``bfn[extra]`` extra is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"{purpose} needs the {module} package: pip install 'bfn[{extra}]'")


class NonFiniteError(ValueError):
    """A network output, loss or gradient holds NaN or Inf; the message names which."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:50]}..."


def check_int(value: Any, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as a Python ``int`` when it is an integer (Python or numpy, not bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        if (
            isinstance(value, Tensor)
            and value.ndim == 0
            and not value.is_floating_point()
            and value.dtype != torch.bool
        ):
            value = int(value.item())
        else:
            bound = "" if minimum is None else f" >= {minimum}"
            raise ValueError(f"{name} must be an integer{bound}, got {type(value).__name__} {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,} (the supported limit), got {value:,}")
    return value


def check_real(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float`` when it is a real number (not bool) in the given range; NaN is always refused."""
    if isinstance(value, Tensor) and value.ndim == 0 and value.is_floating_point():
        value = float(value.item())
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {_describe(value)}")
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ValueError(f"{name} must be a finite number, got {number}")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    low_text = "-inf" if low is None else f"{low:g}"
    high_text = "inf" if high is None else f"{high:g}"
    span = f"{lo}{low_text}, {high_text}{hi}"
    if low is not None and (number < low or (low_open and number == low)):
        raise ValueError(f"{name} must lie in {span}, got {number!r}")
    if high is not None and (number > high or (high_open and number == high)):
        raise ValueError(f"{name} must lie in {span}, got {number!r}")
    return number


def check_eta(value: Any, name: str = "eta") -> float:
    """An end offset ``eta`` (the solver grids start at ``t = 1 - eta``; the PF-ODE likelihood stops there) as a
    ``float`` in the open interval (0, 1)."""
    return check_real(value, name, 0.0, 1.0, low_open=True, high_open=True)


def check_bool(value: Any, name: str) -> bool:
    """``value`` when it is ``True`` or ``False`` (numpy bools included); strings and numbers are refused."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {type(value).__name__} {_describe(value)}")


def check_generator(
    generator: Any, device: torch.device | str | None = None, name: str = "generator", owner: str = "the data / model"
) -> None:
    """``generator`` must be ``None`` or a ``torch.Generator`` (on ``device``'s type when given; the message names
    ``owner`` as what lives there)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if device is None:
        return
    device = torch.device(device)
    gen = generator.device
    if gen.type != device.type or (gen.index is not None and device.index is not None and gen.index != device.index):
        raise ValueError(
            f"{name} lives on {gen} but {owner} on {device}; create it with torch.Generator(device='{device}')"
        )


def check_dtype(dtype: Any, name: str = "dtype", floating: bool = True) -> torch.dtype | None:
    """``dtype`` must be ``None`` or a ``torch.dtype`` (a floating one when ``floating``)."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name} must be a torch.dtype such as torch.float32, got {type(dtype).__name__}")
    if floating and not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating dtype (torch.float32, torch.float64, ...), got {dtype}")
    return dtype


def check_data_shape(data_shape: Any, name: str = "data_shape") -> tuple[int, ...]:
    """A non-empty tuple of positive integer sizes (an integer means a 1-D shape), within the element limit."""
    if isinstance(data_shape, (str, bytes)) or data_shape is None:
        raise ValueError(f"{name} must be a positive integer or a tuple of them, got {_describe(data_shape)}")
    if not isinstance(data_shape, (tuple, list, torch.Size)):
        try:
            data_shape = (check_int(data_shape, name),)
        except ValueError:
            raise ValueError(
                f"{name} must be a positive integer or a tuple of them, got {_describe(data_shape)}"
            ) from None
    shape = tuple(check_int(d, f"{name} entry", minimum=1, maximum=MAX_DATA_ELEMENTS) for d in data_shape)
    if not shape:
        raise ValueError(f"{name} must be a non-empty tuple of positive sizes, got {_describe(data_shape)}")
    if math.prod(shape) > MAX_DATA_ELEMENTS:
        raise ValueError(f"{name} {shape} has {math.prod(shape):,} elements; at most {MAX_DATA_ELEMENTS:,} supported")
    return shape


def check_batch(x: Any, name: str = "x") -> Tensor:
    """``x`` must be a tensor with a batch dimension (``ndim >= 1``); lists, ``None`` and 0-d tensors are refused."""
    if not isinstance(x, Tensor):
        hint = " (convert it with torch.as_tensor)" if isinstance(x, (list, tuple)) else ""
        raise ValueError(f"{name} must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}{hint}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    if x.is_complex():
        raise ValueError(f"{name} must be real, got complex dtype {x.dtype}")
    return x


NETWORK_HINT = "the network diverged or its weights are not finite (check the learning rate and the checkpoint)"


def check_finite_output(out: Tensor, what: str = "network output", hint: str = NETWORK_HINT) -> None:
    """Raise :class:`NonFiniteError` when a floating ``out`` holds NaN or Inf.

    One fused min/max reduction without a full-size temporary: NaN propagates to both and an infinity is one of them.
    """
    if not out.is_floating_point() or out.numel() == 0:
        return
    low, high = torch.aminmax(out.detach())
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        bad = int((~torch.isfinite(out)).sum())
        raise NonFiniteError(f"{what} contains {bad} NaN or Inf value(s) of {out.numel()}; {hint}")

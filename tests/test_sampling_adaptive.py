"""Adaptive step sizes (``bfn.sampling.adaptive``): exact NFE, convergence order in the tolerance, checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.sampling.adaptive import error_estimate, error_weight, next_step, sample_adaptive
from oracles import GaussianDenoiser, JointTableDenoiser, MixtureDenoiser

F64 = torch.float64
M, W = 0.3, 0.5


class Counting(nn.Module):
    """Wraps a network and counts its calls."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        self.calls += 1
        return self.net(x, tau)


def _models() -> dict[str, bfn.BFN]:
    cont = ContinuousFlow(0.02, clip=True)
    disc = DiscretisedFlow(16, math.sqrt(1e-3))
    table = torch.rand(3, 3, generator=torch.Generator().manual_seed(0), dtype=F64) + 0.1
    return {
        "continuous": bfn.BFN(Counting(MixtureDenoiser(cont, [0.3, 0.7], [-0.5, 0.4], [0.1, 0.2])), cont, (3,)),
        "discretised": bfn.BFN(Counting(GaussianDenoiserBins(disc)), disc, (3,)),
        "discrete": bfn.BFN(Counting(JointTableDenoiser(table / table.sum())), DiscreteFlow(3, 3.0), (2,)),
    }


class GaussianDenoiserBins(nn.Module):
    """A discretised-data network of the contract: ``mu_eps = 0.1 mu`` and a fixed ``log sigma_eps``."""

    def __init__(self, flow: DiscretisedFlow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        return torch.stack([0.1 * mu, torch.full_like(mu, -1.0)], -1)


@pytest.mark.parametrize("kind", ["continuous", "discretised", "discrete"])
@pytest.mark.parametrize("final", ["drop", "denoise"])
def test_nfe_is_exact_and_every_call_makes_a_step(kind, final):
    model = _models()[kind]
    for tol, h in ((0.1, 0.0), (0.01, 0.0), (0.01, 0.5)):
        model.net.calls = 0
        out = sample_adaptive(model, 16, tol, torch.Generator().manual_seed(0), h=h, final=final)
        assert out.nfe == model.net.calls == out.steps + (final == "denoise")
        assert out.sampler == "adaptive" and out.options["tol"] == tol
        assert [d["nfe"] for d in out.trajectory] == list(range(1, out.steps + 1))
        times = [d["t"] for d in out.trajectory]
        assert times[0] == pytest.approx(1 - out.options["eta"]) and all(np.diff(times) < 0)
        assert out.t == (0.0 if final == "denoise" else times[-1])
        assert out.samples.shape[0] == 16


def test_a_smaller_tolerance_takes_more_and_smaller_steps():
    model = _models()["continuous"]
    nfe = [sample_adaptive(model, 64, tol, torch.Generator().manual_seed(0)).nfe for tol in (0.1, 0.01, 0.001)]
    assert nfe[0] < nfe[1] < nfe[2], nfe
    out = sample_adaptive(model, 64, 0.1, torch.Generator().manual_seed(0), max_steps=3)
    assert out.nfe <= 3


def _gaussian_errors(order: int, tols: tuple[float, ...]) -> tuple[list[int], list[float]]:
    """NFE and max error at ``t = 0`` against the exact PF-ODE flow map of the same zero start (Gaussian data)."""
    flow = ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, M, W), flow, (64,), dtype=F64)
    sde, eta = flow.sde, 1e-2

    def v(t: float) -> Tensor:
        t64 = torch.tensor(t, dtype=F64)
        return sde.alpha(t64) ** 2 * W * W + sde.sigma(t64) ** 2

    s0 = torch.tensor(1 - eta, dtype=F64)
    xi = torch.randn(8, 64, generator=torch.Generator().manual_seed(0), dtype=F64)
    start = sde.sigma(s0) * xi
    exact = sde.alpha(torch.tensor(0.0, dtype=F64)) * M + torch.sqrt(v(0.0) / v(1 - eta)) * (start - sde.alpha(s0) * M)
    nfes, errors = [], []
    for tol in tols:
        out = sample_adaptive(
            model, 8, tol, torch.Generator().manual_seed(0), order=order, eta=eta, final="denoise", max_steps=2000
        )
        nfes.append(out.nfe)
        errors.append((out.state - exact).abs().max().item())
    return nfes, errors


@pytest.mark.parametrize(("order", "tols", "expected"), [(2, (1e-3, 3e-4, 1e-4), 1.8), (3, (1e-3, 3e-4, 1e-4), 2.7)])
def test_convergence_order_in_the_network_calls(order, tols, expected):
    """Error against NFE as the tolerance shrinks: slope at least the method's order (2 or 3), errors falling."""
    nfes, errors = _gaussian_errors(order, tols)
    slope = float(-np.polyfit(np.log(nfes), np.log(errors), 1)[0])
    assert slope >= expected, (nfes, errors)
    assert errors[0] > errors[1] > errors[2], errors


def test_step_choice_meets_the_tolerance():
    for order in (2, 3):
        delta = next_step(0.3, 0.7, order, 0.0, 1e-3, 1e-4, 5.0)
        assert error_estimate(delta, 0.3, 0.7, order, 0.0, 1e-3) == pytest.approx(1.0, rel=1e-6)
        assert error_estimate(1.01 * delta, 0.3, 0.7, order, 0.0, 1e-3) > 1.0
    assert next_step(0.3, 0.0, 2, 0.0, 1e-3, 1e-4, 5.0) == 5.0
    assert next_step(0.3, 1e6, 2, 0.0, 1e-3, 1e-4, 5.0) == 1e-4
    assert error_weight(-400.0) == 0.0 and error_weight(20.0) == pytest.approx(1.0)
    assert error_weight(0.0) == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tol": 0.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"tol": True}, "tol"),
        ({"order": 4}, "order"),
        ({"h": -1.0}, "h must"),
        ({"final": "exact"}, "final"),
        ({"mode": True}, "mode"),
        ({"eta": 1.0}, "eta"),
        ({"max_steps": 0}, "max_steps"),
        ({"growth": 1.0}, "growth"),
        ({"first_step": -0.1}, "first_step"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    model = _models()["continuous"]
    model.net.calls = 0
    args = {"tol": 0.01, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_adaptive(model, 4, **args)
    assert model.net.calls == 0

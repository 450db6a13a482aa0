"""Class accuracy of class-conditional samples against the guidance scale (the project's digits classifier)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from bfn.model import BFN


@dataclass(frozen=True)
class GuidanceRow:
    """Class accuracy of ``per_class`` samples of every class with one sampler, budget and guidance scale."""

    sampler: str
    nfe: int
    guidance: float
    accuracy: float


@torch.no_grad()
def guidance_accuracy(
    model: BFN,
    classifier: torch.nn.Module,
    sampler: str,
    nfe: int,
    scales: list[float],
    per_class: int = 50,
    seed: int = 0,
) -> list[GuidanceRow]:
    """Share of conditional samples that ``classifier`` assigns to the requested label, per guidance scale.

    The budget ``nfe`` counts network evaluations: a guided call (``s`` not 0 or 1) costs 2, so it gets half the
    steps (:func:`bfn.training.steps_for_nfe`). Images are mapped to [-1, 1] as for FID-digits.
    """
    from bfn.training import steps_for_nfe, to_images

    if model.num_classes is None:
        raise ValueError("class accuracy needs a class-conditional model (trained with --conditional)")
    kind = model.flow.kind
    labels = torch.arange(model.num_classes, device=model.device).repeat_interleave(per_class)
    rows = []
    for scale in scales:
        calls = 1 if scale in (0.0, 1.0) else 2
        steps = steps_for_nfe(sampler, kind, max(nfe // calls, 1))
        generator = torch.Generator(device=model.device).manual_seed(seed)
        out = model.sample(len(labels), sampler, steps=steps, generator=generator, labels=labels, guidance=scale)
        images = to_images(out.samples, model.flow).to(next(classifier.parameters()).device)
        predicted = classifier(images).argmax(-1).to(labels.device)
        rows.append(GuidanceRow(sampler, out.nfe, float(scale), (predicted == labels).double().mean().item()))
    return rows

"""FID-/KID-<dataset> of image sets: run a feature extractor, then compare feature distributions.

The feature extractor is any ``nn.Module`` mapping images ``(N, C, H, W)`` in [-1, 1] to features ``(N, F)``,
normally :func:`bfn.metrics.load_feature_extractor` (a small classifier trained by this package on the same data
set). The numbers are therefore "FID-<dataset>" / "KID-<dataset>" and are *not* Inception FID / KID.

FID accumulates running feature sums in ``torchmetrics.image.fid.FrechetInceptionDistance`` (given our extractor as
its ``feature`` module, so nothing is downloaded); KID uses :func:`bfn.metrics.kernel_inception_distance`, because
torchmetrics' KID draws its subsets from the global random state and cannot take a ``torch.Generator``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bfn.metrics.distances import kernel_inception_distance

RANGE_TOLERANCE = 1e-4


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a float ``(N, C, H, W)`` tensor with values in [-1, 1]."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a float tensor (N, C, H, W) in [-1, 1], got {shape}")
    if images.numel() and float(images.detach().abs().max()) > 1.0 + RANGE_TOLERANCE:
        raise ValueError(f"{name} must lie in [-1, 1]; got max |x| = {float(images.abs().max()):.4g}")


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class FeatureAdapter(nn.Module):
    """Makes an extractor safe to hand to torchmetrics: eval mode, no gradients, float64 ``(N, F)`` output.

    Accepts float images in [-1, 1] (passed through) or ``uint8`` images in [0, 255] (mapped to ``x / 127.5 - 1``),
    moves them to the extractor's device, and exposes ``num_features`` so torchmetrics never probes the extractor
    with a dummy image.
    """

    def __init__(self, extractor: nn.Module, num_features: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, num_features)`` in float64 of images ``(N, C, H, W)``."""
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1.0
        return _run_extractor(self.extractor, images)


@torch.no_grad()
def _run_extractor(extractor: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """One batch through ``extractor`` in eval mode, without gradients; features ``(N, F)`` in float64."""
    extractor.eval()
    feats = extractor(images.to(_module_device(extractor)))
    return feats.reshape(feats.shape[0], -1).to(torch.float64)


def extract_features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Run ``extractor`` in eval mode over ``images`` ``(N, C, H, W)`` in [-1, 1]; features ``(N, F)`` float64 CPU."""
    check_images(images)
    return torch.cat([_run_extractor(extractor, batch).cpu() for batch in images.split(batch_size)])


class FeatureFID:
    """Streaming FID-<dataset>: add reference and sample images in batches, then :meth:`compute`.

    Wraps ``torchmetrics.image.fid.FrechetInceptionDistance(feature=FeatureAdapter(extractor))``, which keeps only
    float64 feature sums (memory ``O(F^2)``, not ``O(N F)``). Reference statistics survive
    ``reset(keep_reference=True)``, so one reference set can score many samplers. The value uses features of the
    given extractor (normally this package's classifier), so it is "FID-<dataset>", not Inception FID.
    """

    def __init__(self, extractor: nn.Module, *, batch_size: int = 512) -> None:
        self.extractor = extractor
        self.batch_size = batch_size
        self._metric: Any = None

    def _build(self, num_features: int) -> Any:
        from torchmetrics.image.fid import FrechetInceptionDistance

        adapter = FeatureAdapter(self.extractor, num_features)
        # normalize=True declares float inputs; with a custom module torchmetrics passes images through unchanged.
        metric = FrechetInceptionDistance(feature=adapter, normalize=True, reset_real_features=False)
        return metric.to(_module_device(self.extractor))  # feature sums live beside the features

    def _num_features(self, images: torch.Tensor) -> int:
        known = getattr(self.extractor, "num_features", None)
        if isinstance(known, int) and known > 0:
            return known
        return int(_run_extractor(self.extractor, images[:1]).shape[1])

    def update(self, images: torch.Tensor, *, reference: bool) -> None:
        """Add images ``(N, C, H, W)`` in [-1, 1] to the reference (``reference=True``) or the sample set."""
        check_images(images)
        if self._metric is None:
            self._metric = self._build(self._num_features(images))
        for batch in images.split(self.batch_size):
            self._metric.update(batch, real=reference)

    def compute(self) -> float:
        """Frechet distance between the Gaussian fits of the two feature sets (each needs >= 2 images)."""
        if self._metric is None:
            raise RuntimeError("FeatureFID.compute() called before any update()")
        return max(float(self._metric.compute()), 0.0)

    def reset(self, *, keep_reference: bool = False) -> None:
        """Forget the sample set, and the reference set too unless ``keep_reference``."""
        if self._metric is not None:
            if keep_reference:
                self._metric.reset()
            else:
                self._metric = None


def image_fid(samples: torch.Tensor, reference: torch.Tensor, extractor: nn.Module, *, batch_size: int = 512) -> float:
    """FID-<dataset> between image sets ``samples`` ``(N, C, H, W)`` and ``reference`` ``(M, C, H, W)`` in [-1, 1].

    ``||m_s - m_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^{1/2})`` on the extractor's features (lower is better, 0 for
    identical sets). Features from this package's classifier make it "FID-<dataset>", not Inception FID.
    """
    metric = FeatureFID(extractor, batch_size=batch_size)
    metric.update(reference, reference=True)
    metric.update(samples, reference=False)
    return metric.compute()


def image_kid(
    samples: torch.Tensor,
    reference: torch.Tensor,
    extractor: nn.Module,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
) -> tuple[float, float]:
    """KID-<dataset> ``(mean, std)`` between image sets ``samples`` and ``reference`` ``(N, C, H, W)`` in [-1, 1].

    Extracts features and calls :func:`bfn.metrics.kernel_inception_distance` (unbiased squared MMD, cubic
    polynomial kernel, averaged over random subsets drawn with ``generator``). Not Inception KID.
    """
    return kernel_inception_distance(
        extract_features(extractor, samples, batch_size),
        extract_features(extractor, reference, batch_size),
        subsets=subsets,
        subset_size=subset_size,
        degree=degree,
        generator=generator,
    )

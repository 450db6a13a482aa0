"""A tiny CNN classifier for grey images whose penultimate layer is the feature space for FID-/KID-<dataset>.

The classifier is trained by this package on the data set it will judge (``digits``, ``mnist`` or
``fashion-mnist``); Frechet / kernel distances on its features are labelled "FID-<dataset>" / "KID-<dataset>" and
are not comparable with Inception FID / KID. Weights are stored as safetensors (never pickle) with a JSON sidecar
recording the seed, the held-out accuracy and the exact call that produced them. The ``digits`` classifier ships
inside the package (``bfn/metrics/weights/``), so evaluation on digits needs no training.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

DatasetName = Literal["digits", "mnist", "fashion-mnist"]
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")

#: Training settings per data set (epochs, learning rate); batch size 64, Adam, held-out fraction 0.2.
TRAIN_SETTINGS: dict[str, dict[str, float]] = {
    "digits": {"epochs": 40, "lr": 2e-3},
    "mnist": {"epochs": 4, "lr": 2e-3},
    "fashion-mnist": {"epochs": 6, "lr": 2e-3},
}
HOLDOUT = 0.2
BATCH_SIZE = 64
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


class DigitsClassifier(nn.Module):
    """Tiny CNN for grey images in [-1, 1], shape ``(N, C, H, W)`` (``1x8x8`` digits, ``1x28x28`` MNIST).

    ``penultimate(x)`` is the last hidden layer ``(N, num_features)`` (before its ReLU); ``features(x)`` is the same
    times the stored constant ``feature_scale`` (set after training so that the features have root-mean-square 1
    on the training images), which is what FID-/KID-<dataset> use; ``forward(x)`` returns class logits
    ``(N, num_classes)``. An adaptive average pool makes the same network work for any image size >= 4x4.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, num_features: int = 64) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = num_features
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 2 * 2, num_features),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(num_features, num_classes))
        self.register_buffer("feature_scale", torch.ones((), dtype=torch.float32))

    def config(self) -> dict[str, int]:
        """Constructor arguments, enough to rebuild the network before loading weights."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "num_features": self.num_features}

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer ``(N, num_features)`` (before its ReLU) of images ``x`` ``(N, C, H, W)`` in [-1, 1]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.body(x.to(self.body[0].weight.dtype))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FID/KID features ``(N, num_features)``: ``penultimate(x) * feature_scale``."""
        return self.penultimate(x) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of images ``x`` ``(N, C, H, W)`` in [-1, 1]."""
        return self.head(self.penultimate(x))

    @torch.no_grad()
    def calibrate_feature_scale(self, images: torch.Tensor, batch_size: int = 1024) -> float:
        """Set ``feature_scale`` to 1 / RMS of ``penultimate`` over ``images``; returns the new scale."""
        squares = sum(float(self.penultimate(x).double().square().sum()) for x in images.split(batch_size))
        rms = (squares / (images.shape[0] * self.num_features)) ** 0.5
        self.feature_scale.fill_(1.0 / max(rms, 1e-12))
        return float(self.feature_scale)


class ClassifierFeatures(nn.Module):
    """Feature extractor: images ``(N, C, H, W)`` in [-1, 1] -> penultimate classifier features ``(N, F)``.

    ``name`` is the data set the classifier was trained on; distances on these features are "FID-<name>".
    """

    def __init__(self, classifier: DigitsClassifier, name: str = "") -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, num_features)``: ``classifier.features(x)``."""
        return self.classifier.features(x)


def digits_images_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 scikit-learn digits as images ``(1797, 1, 8, 8)`` float32 in [-1, 1] (``v / 16 * 2 - 1``) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2.0 - 1.0
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def holdout_split(n: int, fraction: float = HOLDOUT, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random split of ``range(n)`` into (train indices, held-out indices); ``round(fraction * n)`` held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(fraction * n)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def _check_images_labels(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.shape != images.shape[:1] or labels.dtype != torch.long:
        raise ValueError(f"labels must be long (N,) matching images, got {labels.dtype} {tuple(labels.shape)}")


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 40,
    seed: int = 0,
    lr: float = 2e-3,
    batch_size: int = BATCH_SIZE,
    num_classes: int = 10,
) -> DigitsClassifier:
    """Train a :class:`DigitsClassifier` with Adam and cross-entropy on CPU; returns it in eval mode.

    After training, ``feature_scale`` is calibrated on the training images (features with RMS 1).

    ``images`` ``(N, C, H, W)`` float in [-1, 1], ``labels`` ``(N,)`` long. Initialisation and mini-batch order
    come only from ``seed`` (the global RNG is left untouched), so the result is deterministic on a given machine.
    """
    _check_images_labels(images, labels)
    images, labels = images.detach().cpu().float(), labels.detach().cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier(in_channels=images.shape[1], num_classes=num_classes)
    order = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(images.shape[0], generator=order).split(batch_size):
            loss = F.cross_entropy(model(images[rows]), labels[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    model.calibrate_feature_scale(images)
    return model


@torch.no_grad()
def classifier_accuracy(
    model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> float:
    """Share of ``images`` ``(N, C, H, W)`` whose arg-max logit equals ``labels`` ``(N,)``; in [0, 1]."""
    _check_images_labels(images, labels)
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(x).argmax(dim=1) == y.to(x.device)).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size))
    )
    model.train(was_training)
    return correct / images.shape[0]


def _fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256(images.detach().cpu().float().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().long().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fit_classifier(
    dataset: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    epochs: int | None = None,
    lr: float | None = None,
    holdout: float = HOLDOUT,
) -> tuple[DigitsClassifier, dict[str, Any]]:
    """Train on a seeded ``1 - holdout`` share of ``images, labels`` and measure accuracy on the rest.

    Returns the model and a JSON-ready record: data set, seed, settings, held-out and training accuracy, a SHA-256
    of the data, and ``call``, the exact call that reproduces the weights. ``epochs``/``lr`` default to
    ``TRAIN_SETTINGS[dataset]``.
    """
    _check_images_labels(images, labels)
    settings = TRAIN_SETTINGS.get(dataset, TRAIN_SETTINGS["mnist"])
    epochs = int(settings["epochs"]) if epochs is None else epochs
    lr = float(settings["lr"]) if lr is None else lr
    train_rows, test_rows = holdout_split(images.shape[0], holdout, seed)
    model = train_classifier(images[train_rows], labels[train_rows], epochs=epochs, seed=seed, lr=lr)
    source = "*digits_images_labels()" if dataset == "digits" else "images, labels"
    record = {
        "dataset": dataset,
        "seed": seed,
        "epochs": epochs,
        "lr": lr,
        "batch_size": BATCH_SIZE,
        "holdout": holdout,
        "accuracy": classifier_accuracy(model, images[test_rows], labels[test_rows]),
        "train_accuracy": classifier_accuracy(model, images[train_rows], labels[train_rows]),
        "num_train": len(train_rows),
        "num_heldout": len(test_rows),
        "data_shape": list(images.shape),
        "data_sha256": _fingerprint(images, labels),
        "architecture": model.config(),
        "feature_scale": float(model.feature_scale),
        "call": (
            f"bfn.metrics.classifier.fit_classifier({dataset!r}, {source}, seed={seed}, epochs={epochs}, "
            f"lr={lr!r}, holdout={holdout!r})"
        ),
        "torch_version": torch.__version__,
    }
    return model, record


def save_classifier(model: DigitsClassifier, record: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write weights to ``path`` (safetensors, architecture in its metadata) and ``record`` to ``path`` + ``.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata={key: str(value) for key, value in model.config().items()})
    path.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def load_classifier_file(path: str | os.PathLike[str]) -> DigitsClassifier:
    """Rebuild a :class:`DigitsClassifier` from a safetensors file written by :func:`save_classifier` (eval mode).

    Only safetensors is read: nothing is unpickled.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    config = {key: int(metadata[key]) for key in ("in_channels", "num_classes", "num_features") if key in metadata}
    model = DigitsClassifier(**config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache_dir or $BFN_CACHE or ~/.cache/bfn>/metrics``."""
    base = cache_dir or os.environ.get("BFN_CACHE") or Path.home() / ".cache" / "bfn"
    return Path(base).expanduser() / "metrics"


def weights_filename(dataset: str, seed: int = 0) -> str:
    """``<dataset>-classifier-seed<seed>.safetensors``."""
    return f"{dataset}-classifier-seed{seed}.safetensors"


def load_classifier(
    dataset: DatasetName,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    train_if_missing: bool = True,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    seed: int = 0,
) -> DigitsClassifier:
    """The project classifier for ``dataset``: shipped file (digits), else cache, else train and cache.

    Order: ``bfn/metrics/weights/<file>`` (shipped for digits, seed 0); ``cache_root(cache_dir)/<file>``; with
    ``train_if_missing``, train via :func:`fit_classifier` and save to the cache. Digits train on scikit-learn's
    ``load_digits``; ``mnist``/``fashion-mnist`` need the caller's training ``images`` ``(N, 1, 28, 28)`` float in
    [-1, 1] and ``labels`` ``(N,)`` long. Raises ``FileNotFoundError`` when missing and not trained.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    name = weights_filename(dataset, seed)
    for candidate in (SHIPPED_DIR / name, cache_root(cache_dir) / name):
        if candidate.is_file():
            return load_classifier_file(candidate)
    if not train_if_missing:
        raise FileNotFoundError(f"no classifier weights {name} in {SHIPPED_DIR} or {cache_root(cache_dir)}")
    if images is None or labels is None:
        if dataset != "digits":
            raise ValueError(f"training the {dataset} classifier needs images=(N, 1, 28, 28) and labels=(N,)")
        images, labels = digits_images_labels()
    model, record = fit_classifier(dataset, images, labels, seed=seed)
    save_classifier(model, record, cache_root(cache_dir) / name)
    return model


def load_feature_extractor(
    dataset: DatasetName,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    train_if_missing: bool = True,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    seed: int = 0,
) -> ClassifierFeatures:
    """Feature extractor ``(N, C, H, W)`` in [-1, 1] -> ``(N, 64)`` for FID-/KID-``dataset``.

    Wraps :func:`load_classifier` (same arguments and lookup order) in :class:`ClassifierFeatures`.
    """
    classifier = load_classifier(
        dataset, cache_dir=cache_dir, train_if_missing=train_if_missing, images=images, labels=labels, seed=seed
    )
    return ClassifierFeatures(classifier, name=dataset).eval()


def write_shipped_digits_classifier(directory: str | os.PathLike[str] = SHIPPED_DIR) -> dict[str, Any]:
    """Train the seed-0 digits classifier and write it (safetensors + JSON) into ``directory``; returns the record."""
    model, record = fit_classifier("digits", *digits_images_labels(), seed=0)
    record["written_by"] = "bfn.metrics.classifier.write_shipped_digits_classifier()"
    save_classifier(model, record, Path(directory) / weights_filename("digits", 0))
    return record

"""Offline evaluation metrics: FID-/KID-<dataset>, sliced Wasserstein-1, spelling accuracy, bits per dimension.

Images: Frechet distance and kernel (KID) distance on the penultimate features of a small classifier that this
package trains on the same data set (``load_feature_extractor("digits")`` ships with the package). Report them as
"FID-digits", "FID-mnist", ...: they are *not* Inception FID / KID and not comparable with published numbers.

Points (2-D toy data): :func:`sliced_wasserstein`, the mean 1-D Wasserstein-1 distance over random projections.

Text: spelling accuracy as in the BFN-Solver paper (share of space-separated words that hunspell en_US accepts).

Likelihood: :func:`bits_per_dim` (:func:`bfn.bits_per_dim`) turns per-example NLL in nats into bits per dimension
(or per character).

``torchmetrics``, ``spylls``, ``safetensors`` and ``scikit-learn`` are imported only inside the functions that
need them, so importing this package stays cheap.
"""

from bfn.metrics.classifier import (
    ClassifierFeatures,
    DigitsClassifier,
    classifier_accuracy,
    digits_images_labels,
    fit_classifier,
    load_classifier,
    load_feature_extractor,
    train_classifier,
)
from bfn.metrics.distances import (
    feature_moments,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    sliced_wasserstein,
)
from bfn.metrics.images import FeatureFID, extract_features, image_fid, image_kid
from bfn.metrics.spelling import spelling_accuracy, spelling_counts, split_words
from bfn.model import bits_per_dim

__all__ = [
    "ClassifierFeatures",
    "DigitsClassifier",
    "FeatureFID",
    "bits_per_dim",
    "classifier_accuracy",
    "digits_images_labels",
    "extract_features",
    "feature_moments",
    "fit_classifier",
    "frechet_distance",
    "frechet_distance_from_moments",
    "image_fid",
    "image_kid",
    "kernel_inception_distance",
    "load_classifier",
    "load_feature_extractor",
    "sliced_wasserstein",
    "spelling_accuracy",
    "spelling_counts",
    "split_words",
    "train_classifier",
]

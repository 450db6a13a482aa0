"""Data sets for Bayesian Flow Networks, scaled to the range each flow expects (no flow maths here).

``load_dataset(name, kind, ...)`` returns a :class:`DataBundle` of train/val/test datasets whose items are single
tensors: float32 in [-1, 1] for continuous data, float32 bin centres ``(2k + 1) / K - 1`` for discretised
data, int64 class indices in [0, K) for discrete data. Every source is offline; a missing one raises
:class:`DataUnavailableError` (a ``FileNotFoundError``) saying how to install it or where to point ``root``.

Example::

    from bfn.data import load_dataset
    bundle = load_dataset("digits", "discretised")  # 17 bins, data_shape (1, 8, 8)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=128, shuffle=True)
"""

from bfn.data.core import (
    DataBundle,
    DataUnavailableError,
    bins_to_centres,
    cache_dir,
    values_to_bins,
)
from bfn.data.images import RestrictedUnpickler, read_idx
from bfn.data.registry import SOURCES, check_dataset, dataset_names, load_dataset
from bfn.data.text import ALPHABET, NUM_CHARS, clean_text, decode_text, encode_text
from bfn.data.toy import TOY_SETS, toy_points
from bfn.flows import KINDS  # the data kinds, re-exported (one definition, in bfn.flows)

__all__ = [
    "ALPHABET",
    "KINDS",
    "NUM_CHARS",
    "SOURCES",
    "TOY_SETS",
    "DataBundle",
    "DataUnavailableError",
    "RestrictedUnpickler",
    "bins_to_centres",
    "cache_dir",
    "check_dataset",
    "clean_text",
    "dataset_names",
    "decode_text",
    "encode_text",
    "load_dataset",
    "read_idx",
    "toy_points",
    "values_to_bins",
]

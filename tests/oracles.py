"""The exact oracles live in :mod:`bfn.testing`; this module keeps ``from oracles import ...`` working in the tests."""

from bfn.testing import *  # noqa: F403
from bfn.testing import __all__  # noqa: F401

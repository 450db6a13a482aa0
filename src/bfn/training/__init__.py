"""One training loop for every flow and data set, on one process or many (``torchrun``).

The package, one module per concern (every public name is also importable from ``bfn.training``):

* :mod:`~bfn.training.config`: :class:`TrainConfig` and its validation, what a run folder's ``config.json``
  holds, and the checks made before any work (:func:`check_run_config`);
* :mod:`~bfn.training.recipes`: the defaults per data source (flow, network, steps, batch, ``sigma_1`` /
  ``beta_1``, learning rate, EMA), the recipes measured in BENCHMARKS.md;
* :mod:`~bfn.training.distributed`: :class:`DistContext`, :class:`GlobalBatchSampler`, :class:`GlobalBatchLoss`;
* :mod:`~bfn.training.loop`: :func:`train`, the :class:`EMA`, signals, progress and checkpoints of a run;
* :mod:`~bfn.training.logs`: ``log.csv`` and the loss plot;
* :mod:`~bfn.training.evaluation`: NLL, PF-ODE NLL, sample quality against NFE (:func:`evaluate_run`);
* :mod:`~bfn.training.samples`: image grids, scatter plots, text files (:func:`write_samples`);
* :mod:`~bfn.training.demo`: the demo (:func:`run_demo`).

:func:`train` runs AdamW with a linear learning-rate warm-up, gradient clipping, an exponential moving average (EMA)
of the weights, validation NLL (bits/dim, with the EMA weights) at intervals, optional mixed precision
(``torch.autocast``: bf16, or fp16 with a gradient scaler), a tqdm progress bar with loss and ETA, a CSV log and a
loss-curve PNG. Checkpoints are written atomically every ``ckpt_every`` steps, at the end, and when SIGINT/SIGTERM
arrives (the loop finishes the current step, checkpoints and returns); ``resume=True`` continues a run, and on CPU
the continued run is bit-identical to an uninterrupted one. Run folder layout: :mod:`bfn.checkpoint`.

Distributed training: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the loop initialises the
process group (NCCL on GPU, gloo on CPU), wraps the loss in ``DistributedDataParallel``, shards the data with a
:class:`GlobalBatchSampler` (a ``DistributedSampler``) and lets rank 0 alone write files. ``batch_size`` is per
process: the *global* batch is ``batch_size * world_size``.

Randomness (all from ``seed``):

* data order: global batch ``k`` of epoch ``e`` is ``perm_e[kB:(k+1)B]`` with ``perm_e`` a permutation seeded by
  ``(seed, e)``; rank ``r`` takes rows ``[r b, (r+1) b)`` of it. The sequence of global batches does not depend on
  the number of processes.
* loss noise (times and flow samples): one generator, seeded identically on every rank, draws the noise of the
  *whole global batch*; each rank keeps the rows of its own examples and runs the network on those only. So every
  example gets the same noise as in a single-process run with the same global batch, and the losses agree to
  rounding (the rest of the batch costs only the flow's elementwise maths, not network calls).
* torch's default generator (used by datasets, e.g. dynamic binarisation) is seeded per rank with ``(seed, rank)``.
* validation draws from its own fixed-seed generator inside ``torch.random.fork_rng``, so it neither perturbs
  training nor varies between evaluations.

Checkpoints store the step, the weights, EMA weights, optimizer (and grad-scaler) state, the loss-noise generator
and every rank's default-generator state; the data position follows from the step.
"""

from bfn.metrics.distances import sliced_wasserstein
from bfn.training import config, demo, distributed, evaluation, logs, loop, recipes, samples
from bfn.training.config import *  # noqa: F403
from bfn.training.demo import *  # noqa: F403
from bfn.training.distributed import *  # noqa: F403
from bfn.training.evaluation import *  # noqa: F403
from bfn.training.logs import *  # noqa: F403
from bfn.training.loop import *  # noqa: F403
from bfn.training.recipes import *  # noqa: F403
from bfn.training.samples import *  # noqa: F403

#: every module's public names, and sliced_wasserstein (in bfn.metrics) where it was importable from before
__all__ = [
    *config.__all__,
    *recipes.__all__,
    *distributed.__all__,
    *loop.__all__,
    *logs.__all__,
    *evaluation.__all__,
    *samples.__all__,
    *demo.__all__,
    "sliced_wasserstein",
]

"""Model folders and training checkpoints: atomic writes, verified loads, no pickled code.

Two folder layouts share one ``config.json``, whose model section (flow kind and config, ``data_shape``, network
name and options, and for class-conditional models ``num_classes`` and ``label_dropout``) is written and read only
through :class:`ModelConfig`:

* a *model folder* (:func:`save_pretrained`): ``config.json`` (the model section) and ``model.safetensors``;
* a *run folder* (:func:`bfn.training.train`): the same ``config.json`` plus the whole resolved training config
  (``"train"``) and a data description (``"data"``), ``log.csv``, ``loss.png`` and the latest checkpoint in
  ``checkpoint/``::

      checkpoint/model.safetensors   network weights
      checkpoint/ema.safetensors     EMA weights
      checkpoint/optimizer.pt        optimizer (and grad-scaler) state: plain tensors, numbers, lists and dicts
      checkpoint/rng.pt              random-generator states (torch default per rank, the loss-noise generator)
      checkpoint/state.json          step, elapsed time, the size and sha256 of every file above, and the
                                     sha256 of state.json's own other entries ("checksum")
      checkpoint.old/                the previous checkpoint generation (same layout)

Atomicity: a checkpoint is written file by file into ``checkpoint.tmp/`` (each file fsynced, ``state.json`` last),
then swapped in by renames (``checkpoint`` -> ``checkpoint.old``, ``checkpoint.tmp`` -> ``checkpoint``); the
previous generation stays in ``checkpoint.old/`` until the next save. A crash at any point leaves a complete
checkpoint: ``checkpoint/`` if it exists, otherwise the complete ``checkpoint.tmp/`` (crash between the two renames)
or ``checkpoint.old/``. Loading checks every file against the size and sha256 recorded in ``state.json`` (and
``state.json`` against its own checksum), so files of different steps are never mixed; when the newest checkpoint
fails that check, loading falls back to the previous generation with a warning. The manifest may name only plain
file names inside the checkpoint folder, and must list all four files.

Modules: :mod:`~bfn.checkpoint.files` (names, atomic writes, safe loads), :mod:`~bfn.checkpoint.pretrained`
(:class:`ModelConfig`, model folders) and :mod:`~bfn.checkpoint.state` (training checkpoints); every public
name is importable from ``bfn.checkpoint``.

Safety: weights are read with ``safetensors``; ``.pt`` files with ``torch.load(weights_only=True)``, which refuses
any pickle that would import or call code. Unreadable, truncated or unsafe files raise :class:`CheckpointError`
naming the file.
"""

from bfn.checkpoint import files, pretrained, state
from bfn.checkpoint.files import *  # noqa: F403
from bfn.checkpoint.pretrained import *  # noqa: F403
from bfn.checkpoint.state import *  # noqa: F403

__all__ = [*files.__all__, *pretrained.__all__, *state.__all__]

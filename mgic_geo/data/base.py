"""What the Lightning data modules share: the root, batch, worker and seed arguments and their checks,
the resumable training shuffle, worker seeding and the three loaders.

Contract of every data module built on :class:`BaseDataModule`:

- the training loader shuffles with ``self.generator`` (seeded with ``seed``, kept in checkpoints by
  :class:`~mgic_geo.data.shuffle.ResumableShuffle`) and drops the last incomplete batch, so
  ``batch_size`` may not exceed the training samples (a ``ValueError`` at ``setup``);
- the validation and test loaders serve their split in order, never shuffled, never dropping a batch;
- with ``num_workers > 0`` the training workers start afresh each epoch, each seeded by PyTorch from
  the generator plus its worker id (and :func:`seed_worker` seeds numpy and ``random`` from that), so
  a resumed run's workers draw what an uninterrupted run's would; evaluation workers persist.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from mgic_geo.data.shuffle import ResumableShuffle
from mgic_geo.validation import check_int


def check_flags(**flags) -> None:
    """``ValueError`` naming the first of ``flags`` that is not ``True`` or ``False``."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"`{name}` must be True or False, got {flag!r}")


def seed_worker(worker_id: int) -> None:
    """A ``DataLoader`` worker's ``worker_init_fn``: PyTorch seeds torch in each worker from the
    loader's generator; this seeds numpy and ``random`` from that seed too, for transforms drawing
    from them."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class BaseDataModule(ResumableShuffle, LightningDataModule):
    """A ``LightningDataModule`` with the arguments and loaders every data module of the package shares
    (see the module docstring for the contract).

    A subclass checks its own arguments, calls ``super().__init__(root, batch_size=..., num_workers=...,
    seed=..., **flags)`` and then ``self.save_hyperparameters()``; its :meth:`setup` fills
    ``train_set``, ``val_set`` and ``test_set`` (each ``None`` until built) and calls
    :meth:`check_train_size` on the training split.

    Args:
        root (str): the data root.
        batch_size (int): samples per batch (positive).
        num_workers (int): ``DataLoader`` worker processes (0: load in the main process).
        seed (int): seeds the training shuffle and the worker seeds (non-negative).
        **flags (bool): boolean options (``augment``, ``download``, ...), each checked to be ``True``
            or ``False`` and kept as the attribute of its name.
    """

    #: the loader class (a subclass may name PyG's, which batches ``Data`` objects)
    loader_class = DataLoader
    #: what a training sample is called in errors (``"images"``, ``"shapes"``, ...)
    sample_name = "samples"
    train_set: Dataset | None = None
    val_set: Dataset | list | None = None
    test_set: Dataset | None = None

    def __init__(self, root: str, *, batch_size: int, num_workers: int, seed: int, **flags: bool) -> None:
        check_int("batch_size", batch_size)
        check_int("num_workers", num_workers, minimum=0)
        check_int("seed", seed, minimum=0)
        check_flags(**flags)
        super().__init__()
        self.root = Path(root)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        for name, flag in flags.items():
            setattr(self, name, flag)
        # One generator for the data module's life: a reloaded training loader continues the stream
        # instead of repeating the first epoch's order.
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def eval_batch_size(self) -> int:
        """Samples per validation and test batch (``batch_size`` unless a subclass says otherwise)."""
        return self.batch_size

    def check_train_size(self, count: int) -> None:
        """``ValueError`` when ``count`` training samples cannot fill one batch (the training loader
        drops incomplete batches, so it would yield nothing)."""
        if count < self.batch_size:
            raise ValueError(f"`batch_size` ({self.batch_size}) exceeds the {count} training {self.sample_name}; "
                             "the training loader drops incomplete batches, so it would yield nothing")

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # Training workers start afresh each epoch, seeded from the generator, which checkpoints keep
        # (state_dict): a resumed run's workers then draw what an uninterrupted run's would.
        return self.loader_class(dataset, batch_size=self.batch_size if train else self.eval_batch_size,
                                 shuffle=train, drop_last=train, generator=self.generator if train else None,
                                 num_workers=self.num_workers, persistent_workers=self.num_workers > 0 and not train,
                                 worker_init_fn=seed_worker if self.num_workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches, augmented where the data module augments."""
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list:
        """The validation split in order, never augmented; ``[]`` when there is none (Lightning then
        skips validation)."""
        if self.val_set is None:
            self.setup("validate")
        if not len(self.val_set):
            return []
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """The test split in order, never augmented; building it raises the data module's
        ``ValueError`` on a root without one."""
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, train=False)

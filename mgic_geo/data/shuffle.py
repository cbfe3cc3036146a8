"""Resumable training shuffles for the data modules.

A data module keeps its training order in ``self.generator`` (a seeded ``torch.Generator``
handed to the training ``DataLoader``). Lightning saves a data module's ``state_dict`` in every
checkpoint and hands it back on ``--ckpt_path``, so with this mixin a resumed run goes on with the
shuffle an uninterrupted run would draw. Training workers must not be persistent for that: each
epoch's workers are seeded from the generator when they start.
"""
from __future__ import annotations


class ResumableShuffle:
    """Mixin: the training shuffle's generator state in the data module's ``state_dict``."""

    generator = None  # a torch.Generator, set by the data module

    def state_dict(self) -> dict:
        """The training shuffle's generator state (saved in checkpoints)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if "generator" in state_dict:  # absent from checkpoints written before it was saved
            self.generator.set_state(state_dict["generator"])

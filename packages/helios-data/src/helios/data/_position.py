"""``SamplePosition``: where training stands in an epoch's order, held in exactly one place.

The position is ``(epoch, consumed)``: the epoch and the number of samples of its order the
training loop has consumed, counted over all ranks. One object holds it. A
:class:`~helios.data.ResumableSampler` reads and writes it; a :class:`~helios.data.DataModule`
owns it for the whole run and lends it to each training sampler it builds (a curriculum builds
one per phase), so nothing keeps a copy that would have to be reconciled.

Iterations *claim* the position when they start: a claim carries the position it started from
and a generation number. Moving the position from outside (a new epoch, a restored state) or
starting another iteration ends every earlier claim, so a stale iterator can never write its
progress over the new position.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Final

__all__ = ["PositionClaim", "SamplePosition"]

# Generations are unique in the process, so a claim on one position never holds on another.
_GENERATIONS: Final = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class PositionClaim:
    """An iteration's hold on a :class:`SamplePosition`.

    Attributes:
        start: the position (global samples consumed) the iteration started from.
        generation: which claim this is; it holds until the position is moved or claimed again.
    """

    start: int
    generation: int


class SamplePosition:
    """The epoch and the global number of samples of it consumed: the one training position.

    Values are stored as given; the sampler using the position checks and normalises them.

    Example:
        >>> position = SamplePosition()
        >>> claim = position.claim()
        >>> position.advance(claim, 8)
        >>> position.epoch, position.consumed
        (0, 8)
        >>> position.move_to(1, 0)          # ends the claim
        >>> position.advance(claim, 16)     # a stale iteration changes nothing
        >>> position.epoch, position.consumed
        (1, 0)
    """

    def __init__(self, epoch: int = 0, consumed: int = 0) -> None:
        """Start at ``consumed`` samples into ``epoch``."""
        self._epoch = epoch
        self._consumed = consumed
        self._generation = next(_GENERATIONS)
        # While a sampler is iterated directly, the position is read from its live iterator on
        # demand (no cost per sample): this reads it.
        self._reader: Callable[[], int] | None = None

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._epoch

    @property
    def consumed(self) -> int:
        """Samples of the epoch consumed so far, over all ranks."""
        reader = self._reader
        return self._consumed if reader is None else reader()

    def move_to(self, epoch: int, consumed: int) -> None:
        """Set the position; every claim made before stops counting."""
        self._epoch, self._consumed = epoch, consumed
        self._reader = None
        self._generation = next(_GENERATIONS)

    def claim(self) -> PositionClaim:
        """Freeze the position for a new iteration, ending every earlier claim."""
        start = self.consumed
        self._consumed = start
        self._reader = None
        self._generation = next(_GENERATIONS)
        return PositionClaim(start, self._generation)

    def holds(self, claim: PositionClaim) -> bool:
        """Whether ``claim`` is still the one that may move the position."""
        return claim.generation == self._generation

    def advance(self, claim: PositionClaim, consumed: int) -> None:
        """Record ``consumed`` for ``claim``'s iteration; nothing if the claim no longer holds."""
        if claim.generation == self._generation:
            self._consumed = consumed
            self._reader = None

    def follow(self, claim: PositionClaim, reader: Callable[[], int]) -> None:
        """Read ``consumed`` from ``reader`` until the next write, if ``claim`` still holds."""
        if claim.generation == self._generation:
            self._reader = reader

    def __repr__(self) -> str:
        """Show the epoch and the samples consumed."""
        return f"SamplePosition(epoch={self.epoch}, consumed={self.consumed})"

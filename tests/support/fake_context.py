"""``FakeContext``: the tests' one stand-in for a ``DistributedContext``, without a process group.

It plays rank ``rank`` of a group whose other ranks are given by what they would send, so code
that reduces over ranks can be checked in one process. Networks are not wrapped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Literal, TypeVar

import torch

T = TypeVar("T")


class FakeContext:
    """Rank ``rank`` of ``len(others) + 1`` processes; the other ranks send ``others``.

    ``all_reduce_mean`` averages this rank's values with the others' (as the collective would)
    and records the names it reduced in :attr:`reductions`, so a test can tell whether
    communication happened. ``all_reduce_sum`` adds ``other_sums`` (one tensor per other rank).
    """

    def __init__(
        self,
        rank: int = 0,
        others: list[dict[str, float]] | None = None,
        *,
        other_sums: list[torch.Tensor] | None = None,
    ) -> None:
        self.others = others or []
        self.other_sums = other_sums or []
        self.rank = self.local_rank = rank
        self.node_rank = 0
        self.world_size = len(self.others) + 1
        self.device = torch.device("cpu")
        self.is_distributed = self.world_size > 1
        self.is_main_process = self.is_local_main_process = rank == 0
        self.reductions: list[list[str]] = []
        self.closed = False

    def barrier(self) -> None:
        pass

    def all_reduce_mean(self, metrics: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
        self.reductions.append(list(metrics))
        return {
            name: (float(value) + sum(other[name] for other in self.others)) / self.world_size
            for name, value in metrics.items()
        }

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if len(self.other_sums) != len(self.others):
            raise AssertionError("FakeContext.all_reduce_sum needs other_sums for every other rank")
        total = values.detach().clone()
        for other in self.other_sums:
            total += other.to(total.dtype)
        return total

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        return obj

    def all_gather_object(self, obj: T) -> list[T]:
        return [obj] * self.world_size

    def agree(self, flag: bool, mode: Literal["any", "all"] = "any") -> bool:
        return flag

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def no_sync(self, module: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        self.closed = True

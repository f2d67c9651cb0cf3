"""Progress bars for the training, validation and test loops, drawn by tqdm on the terminal.

A bar is for a person watching a terminal: by default it is drawn only when stderr is one, so a
job whose output goes to a file (a cluster's batch log) gets no lines of carriage returns. Bars
write to stderr directly, never through ``logging``, so no bar reaches a log file; the console
handler of :func:`~helios.log.setup_logging` clears the bars while it prints a log line.

Which process draws is the caller's decision (``enabled=context.is_main_process and ...``): this
module knows nothing of ranks.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from tqdm import tqdm

from helios.core import ConfigurationError

__all__ = ["ProgressBar"]


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


class ProgressBar:
    """A tqdm bar on stderr that can start part-way, where a resumed loop starts.

    Example:
        >>> with ProgressBar(total=2000, initial=state.step, desc="train") as bar:  # doctest: +SKIP
        ...     for batch in loader:
        ...         ...
        ...         bar.update()
        ...         bar.set_postfix({"loss": loss.item()})

    Args:
        total: how many units the loop has, or ``None`` if unknown.
        initial: how many were already done (the resumed position).
        desc: the label before the bar.
        unit: the name of one unit (``"it"``, ``"batch"``, ``"step"``).
        enabled: draw the bar; ``None`` draws it only when stderr is a terminal.
        leave: keep the finished bar on screen.

    Raises:
        ConfigurationError: ``total`` is negative or ``initial`` is negative or beyond ``total``.
    """

    def __init__(
        self,
        total: int | None,
        *,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        enabled: bool | None = None,
        leave: bool = True,
    ) -> None:
        if total is not None and (isinstance(total, bool) or total < 0):
            raise ConfigurationError(
                f"ProgressBar: total must be an int >= 0 or None, got {total!r}"
            )
        if initial < 0 or (total is not None and initial > total):
            raise ConfigurationError(
                f"ProgressBar: initial must be between 0 and total={total!r}, got {initial!r}"
            )
        stream = sys.stderr
        self.enabled = _is_terminal(stream) if enabled is None else bool(enabled)
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            leave=leave,
            file=stream,
            disable=not self.enabled,
            dynamic_ncols=True,
        )
        self._position = initial

    @property
    def n(self) -> int:
        """How many units are done, ``initial`` included (counted even when not drawn)."""
        return self._position

    def update(self, n: int = 1) -> None:
        """Advance the bar by ``n`` units."""
        self._position += n
        self._bar.update(n)

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        """Show ``values`` (e.g. the current loss) after the bar."""
        if self.enabled:
            self._bar.set_postfix(dict(values))

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        self._bar.close()

    def __enter__(self) -> Self:
        """Return the bar itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the bar."""
        self.close()

"""The warning a store gives when it skips a damaged checkpoint, so it can be filtered or logged.

Route it to a log file with ``logging.captureWarnings(True)``.
"""

from __future__ import annotations

__all__ = ["CheckpointWarning"]


class CheckpointWarning(UserWarning):
    """A checkpoint was found damaged (and skipped), or old ones could not be pruned."""

"""The error types of Helios.

Every mistake a user can make gets one of these, with a message that names the argument,
the bad value and what was expected. They derive from :class:`HeliosError` so a caller can
catch everything Helios raises on purpose in one clause.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "HeliosError",
    "RegistryError",
    "ResumeError",
    "RunFolderLockedError",
]


class HeliosError(Exception):
    """Base class of every error Helios raises on purpose."""


class ConfigurationError(HeliosError, ValueError):
    """An argument or setting has a value Helios cannot work with.

    Also a :class:`ValueError`, so code that already guards against bad values catches it.
    """


class RegistryError(ConfigurationError, LookupError):
    """A registry was asked for a name it does not hold, or given a name twice."""


class CheckpointError(HeliosError):
    """A checkpoint cannot be written, read, verified or trusted."""


class ResumeError(HeliosError):
    """Saved state does not fit the objects it is being restored into."""


class RunFolderLockedError(HeliosError):
    """Another process holds the run folder (a second ``fit``, ``test`` or ``export`` of it).

    The message names the folder, the process that holds it (PID and host) and what it is doing.
    """

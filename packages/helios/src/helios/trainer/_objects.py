"""What ``--model`` and ``--data`` name: a class or factory, in a module or a file, with arguments.

    --model digits:Classifier                      # module:Name (module.Name too)
    --model path/to/digits.py:Classifier           # a file, wherever it is
    --model digits:make_model --model-args '{"width": 64}'   # a factory, with JSON arguments

Modules are imported with the current folder on ``sys.path`` *after* the installed packages, so a
file there never shadows an installed module. A file is loaded under its own name (its folder
goes last on ``sys.path`` too, so it can import its neighbours). Every failure -- a missing file
or name, an import that raises, arguments that are not a JSON object, a constructor that fails,
an object of the wrong kind -- is a :class:`CommandError` of one line naming the flag.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helios.trainer._cli_checkpoints import CommandError

__all__ = ["build", "current_folder_last", "load_object"]


def current_folder_last() -> None:
    """Let the current folder provide modules, but never before the installed ones.

    ``python -m helios.trainer`` puts the current folder first on ``sys.path``: a file there
    named like an installed module (an ``onnxruntime.py``) would run instead of it. The folder
    goes last, where it still finds the user's own ``module:Class``.
    """
    _append_last(os.getcwd())


def _append_last(folder: str) -> None:
    here = os.path.realpath(folder)
    sys.path[:] = [entry for entry in sys.path if entry != "" and os.path.realpath(entry) != here]
    sys.path.append(here)


def _is_file(location: str) -> bool:
    return location.endswith(".py") or "/" in location or os.sep in location


def _module(location: str, spec: str, flag: str) -> Any:
    """Import the module ``location`` names: a dotted name or the path of a ``.py`` file."""
    current_folder_last()
    if not _is_file(location):
        try:
            return importlib.import_module(location)
        except Exception as error:  # an import runs user code: any error is the user's to see
            raise CommandError(
                f"{flag}: cannot import module {location!r} for {spec!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise CommandError(f"{flag} {spec!r}: there is no file {str(path)!r}")
    name = f"helios_user_{path.stem}_{abs(hash(str(path))):x}"
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise CommandError(f"{flag} {spec!r}: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(found)
    _append_last(str(path.parent))  # its neighbours import as they would when run as a script
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        found.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise CommandError(
            f"{flag}: running {str(path)!r} for {spec!r} failed: {type(error).__name__}: {error}"
        ) from error
    return module


def load_object(spec: str, flag: str = "--model") -> Callable[..., Any]:
    """The class or factory ``spec`` names (``module:Name``, ``module.Name``, ``file.py:Name``).

    Raises:
        CommandError: the module, file or name cannot be found, or is not callable.
    """
    location, sep, name = spec.rpartition(":")
    if not sep:
        location, _, name = spec.rpartition(".")
    if not location or not name or not name.isidentifier():
        raise CommandError(
            f"{flag} {spec!r} is not of the form module:Class or path/to/file.py:Class"
        )
    module = _module(location, spec, flag)
    found = getattr(module, name, None)
    if found is None:
        where = "file" if _is_file(location) else "module"
        raise CommandError(f"{flag}: {where} {location!r} has no class {name!r} (nor function)")
    if not callable(found):
        raise CommandError(
            f"{flag} {spec!r} names a {type(found).__name__}; expected a class or a function"
        )
    return found  # type: ignore[no-any-return]


def _arguments(text: str | None, flag: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(f"{flag}-args {text!r} is not JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise CommandError(
            f"{flag}-args {text!r} is a JSON {type(parsed).__name__}; expected an object of "
            "keyword arguments, e.g. '{\"width\": 64}'"
        )
    return parsed


def build(spec: str, args: str | None, flag: str, expected: type, kind: str) -> Any:
    """Call what ``spec`` names with the keyword arguments of the JSON object ``args``.

    Args:
        spec: what ``flag`` names.
        args: the JSON text of ``{flag}-args`` (``None``: no arguments).
        flag: the option, for the messages (``"--model"``).
        expected: the type the result must have.
        kind: how messages name that type (``"helios.core.Model"``).

    Raises:
        CommandError: as :func:`load_object`; ``args`` is not a JSON object; the call fails;
            or it returns something that is not an ``expected``.
    """
    kwargs = _arguments(args, flag)
    factory = load_object(spec, flag)
    label = getattr(factory, "__qualname__", spec)
    if isinstance(factory, type) and not issubclass(factory, expected):
        raise CommandError(
            f"{flag} {spec!r} names {factory.__module__}.{factory.__qualname__}, which is not a "
            f"{kind}; expected a subclass of {expected.__qualname__} (or a function returning "
            "one)"
        )
    try:
        made = factory(**kwargs)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        hint = (
            f"; pass its arguments as a JSON object with {flag}-args '{{\"name\": value}}'"
            if isinstance(error, TypeError) and not kwargs
            else ""
        )
        raise CommandError(
            f"{flag} {spec!r}: {label}(**{kwargs!r}) failed: {type(error).__name__}: {first}{hint}"
        ) from error
    if not isinstance(made, expected):
        raise CommandError(
            f"{flag} {spec!r}: {label}(...) returned a {type(made).__name__}; expected a {kind}"
        )
    return made

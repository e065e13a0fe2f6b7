"""Load a user's ``DPMechanism`` from a Python file, unchanged, and call its declarations.

A mechanism is named by a *spec*, ``PATH.py[:ClassName]`` (class ``DPMechanism``
by default). The file is executed as a fresh module each time it is loaded,
with its own directory on ``sys.path`` while it is imported, so that sibling
modules it imports are found. Every failure (missing file, an exception at
import, a missing class or method, a constructor that rejects the run, a
declared σ that is not a positive number) becomes one
:class:`~dpaudit.errors.InputError` line that starts with the file's path and
says what went wrong.

The probe and the audits need many fresh instances of the same mechanism
(mechanisms keep state between calls), so :class:`MechanismFactory` keeps the
loaded class and the run it is built for and hands out new instances.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import math
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaudit.errors import InputError
from dpaudit.run_config import RunConfig

DEFAULT_CLASS = "DPMechanism"
REQUIRED_METHODS = ("clip_and_noise", "get_effective_sigma")

_module_counter = itertools.count()


def parse_spec(spec: str) -> tuple[Path, str]:
    """Split ``"PATH.py[:ClassName]"`` into the path and the class name.

    The class name defaults to ``DPMechanism``. A ``:`` is read as the class
    separator only when what follows it contains no path separator, so a
    Windows drive letter (``C:\\x.py``) is left alone.
    """
    if not isinstance(spec, (str, Path)):
        raise InputError(f"mechanism spec must be a string PATH.py[:ClassName], got {spec!r}")
    text = str(spec).strip()
    if not text:
        raise InputError("mechanism spec is empty; expected PATH.py[:ClassName]")
    path_text, class_name = text, DEFAULT_CLASS
    head, sep, tail = text.rpartition(":")
    if sep and head and "/" not in tail and "\\" not in tail:
        path_text, class_name = head, tail.strip()
        if not class_name:
            raise InputError(f"{path_text}: empty class name after ':' in mechanism spec {text!r}")
        if not class_name.isidentifier():
            raise InputError(
                f"{path_text}: {class_name!r} is not a valid Python class name (spec {text!r})"
            )
    return Path(path_text), class_name


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe_exception(exc: BaseException, path: Path | None = None) -> str:
    """``"NameError: name 'foo' is not defined"``, with the file's line when known."""
    where = ""
    if path is not None:
        target = str(path.resolve())
        lines = [
            fr.lineno
            for fr in traceback.extract_tb(exc.__traceback__)
            if fr.filename and str(Path(fr.filename).resolve()) == target
        ]
        if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
            lines = []  # the message already carries the line
        if lines:
            where = f" (line {lines[-1]})"
    message = _one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {message}{where}" if message else f"{name}{where}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: mechanism file does not exist")
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected a .py file defining the mechanism class)")
    if path.suffix != ".py":
        raise InputError(f"{path}: not a .py file (expected PATH.py[:ClassName])")


def _import_file(path: Path) -> Any:
    """Execute ``path`` as a new module with a unique name; return the module."""
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_dpaudit_user_{stem}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - .py files always get a loader
        raise InputError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)
    # Registered before execution: dataclasses and pickling look the module up by name.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise InputError(f"{path}: import failed: {_describe_exception(exc, path)}") from exc
    finally:
        try:
            sys.path.remove(directory)
        except ValueError:  # the file removed it itself
            pass
    return module


def load_mechanism_class(spec: str) -> type:
    """Import the file named by ``spec`` and return its mechanism class.

    Raises:
        InputError: the file does not exist or is not a ``.py`` file; importing
            it raised; the class is not defined there; or the class lacks
            ``clip_and_noise`` or ``get_effective_sigma``.
    """
    path, class_name = parse_spec(spec)
    _check_file(path)
    module = _import_file(path)
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        found = sorted(
            name
            for name, obj in vars(module).items()
            if inspect.isclass(obj) and getattr(obj, "__module__", None) == module.__name__
        )
        listing = ", ".join(found) if found else "none"
        what = "is not a class" if cls is not None else "not found"
        raise InputError(f"{path}: class {class_name} {what}; classes defined in the file: {listing}")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise InputError(
            f"{path}: class {class_name} lacks {' and '.join(missing)} "
            "(the seed interface needs clip_and_noise(per_sample_grads, step, epoch) "
            "and get_effective_sigma(step, epoch))"
        )
    return cls


def _source_of(obj: Any) -> str:
    """The file a mechanism class (or instance) came from, for messages."""
    cls = obj if inspect.isclass(obj) else type(obj)
    try:
        return str(Path(inspect.getfile(cls)))
    except (TypeError, OSError):
        return getattr(cls, "__module__", None) or cls.__name__


def construct(cls: type, config: RunConfig, *, source: str | None = None) -> Any:
    """Instantiate ``cls`` with the eight seed keyword arguments of ``config``.

    Raises:
        InputError: ``"PATH: DPMechanism(...) raised ValueError: ..."`` when the
            constructor raises.
    """
    try:
        return cls(**config.seed_arguments())
    except (Exception, SystemExit) as exc:
        where = source if source is not None else _source_of(cls)
        raise InputError(
            f"{where}: {cls.__name__}(...) raised {_describe_exception(exc)}"
        ) from exc


@dataclass(frozen=True)
class MechanismFactory:
    """A loaded mechanism class bound to one run; :meth:`new` gives a fresh instance.

    Pickles by spec (a worker process re-imports the file), so factories can be
    sent to ``multiprocessing`` workers even though the class lives in a
    module that only exists in the process that loaded it.
    """

    spec: str
    cls: type
    config: RunConfig

    @classmethod
    def load(cls, spec: str, config: RunConfig) -> "MechanismFactory":
        """Load the class named by ``spec`` and construct it once to surface constructor errors."""
        mech_cls = load_mechanism_class(spec)
        factory = cls(str(spec), mech_cls, config)
        factory.new()
        return factory

    @property
    def path(self) -> Path:
        return parse_spec(self.spec)[0]

    def new(self) -> Any:
        """A fresh instance, constructed with the run's seed arguments."""
        return construct(self.cls, self.config, source=str(self.path))

    def __reduce__(self):
        return (_factory_from_spec, (self.spec, self.config))


def _factory_from_spec(spec: str, config: RunConfig) -> MechanismFactory:
    return MechanismFactory(spec, load_mechanism_class(spec), config)


def epoch_of(step: int, config: RunConfig) -> int:
    """The epoch (counted from 0) that ``step`` (counted from 0) falls in."""
    return int(step) // config.steps_per_epoch


def _declared(mech: Any, method: str, step: int, epoch: int, what: str) -> float:
    call = f"{method}(step={step}, epoch={epoch})"
    try:
        raw = getattr(mech, method)(step, epoch)
    except Exception as exc:
        raise InputError(f"{_source_of(mech)}: {call} raised {_describe_exception(exc)}") from exc
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(
            f"{_source_of(mech)}: {call} returned {raw!r}; the {what} must be a number"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"{_source_of(mech)}: {call} returned {value!r} at step {step}; "
            f"the {what} must be finite and > 0"
        )
    return value


def declared_sigma(mech: Any, step: int, epoch: int) -> float:
    """The noise multiplier the mechanism claims for ``step`` (``get_effective_sigma``)."""
    return _declared(mech, "get_effective_sigma", step, epoch, "noise multiplier")


def declared_sensitivity(mech: Any, step: int, epoch: int, default: float) -> float:
    """The L2 sensitivity the mechanism claims for ``step``.

    ``get_sensitivity(step, epoch)`` when the mechanism defines it, else
    ``default`` (the run's ``max_grad_norm``, as the seed interface says).
    """
    if callable(getattr(mech, "get_sensitivity", None)):
        return _declared(mech, "get_sensitivity", step, epoch, "sensitivity")
    value = float(default)
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"default sensitivity (max_grad_norm) must be finite and > 0 at step {step}, got {default!r}"
        )
    return value

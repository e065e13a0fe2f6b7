"""Exceptions that the CLI turns into one line on stderr and exit code 2."""


class InputError(ValueError):
    """A user-supplied value, file or mechanism is unusable; the message names it."""


class AccountingError(RuntimeError):
    """An accountant could not produce a number for a valid schedule (e.g. a numerical limit)."""


class CalibrationError(InputError):
    """No noise scale reaches the requested privacy budget."""

"""Entry point of ``dpaudit <command> ...``.

Everything a user can get wrong ends in one line on stderr and exit code 2;
Ctrl-C, at any point, in one line and exit code 130. Nothing heavy is
imported at module level: each command imports what it runs when it runs, so
``dpaudit --help`` answers before numpy, torch or an accountant library loads,
and an interrupt during those imports is caught like any other.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from dpaudit.errors import AccountingError, InputError

DESCRIPTION = """\
Does a differentially private training mechanism stay inside the (epsilon, delta)
budget it claims? Privacy is for add/remove-one-example neighbours under Poisson
sampling throughout. Run `dpaudit COMMAND --help` for a command's flags."""

EPILOG = """\
exit codes: 0 pass / no violation, 1 fail / violation, 2 input error,
3 inconclusive, 130 interrupted. DPAUDIT_DEBUG=1 shows the traceback of an
unexpected error."""


def build_parser():
    """The argparse parser of every command (imports only the light command modules)."""
    import argparse

    from dpaudit import __version__
    from dpaudit.cli import audit_cmd, certify_cmd, epsilon_cmd, sigma_cmd

    class Parser(argparse.ArgumentParser):
        """argparse whose errors are a single line (no usage dump) with exit code 2."""

        def __init__(self, **kwargs) -> None:
            kwargs.setdefault("allow_abbrev", False)  # scripts must not depend on prefixes of flags
            super().__init__(**kwargs)

        def error(self, message: str) -> None:  # type: ignore[override]
            sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
            raise SystemExit(2)

    parser = Parser(prog="dpaudit", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dpaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in (epsilon_cmd, sigma_cmd, certify_cmd, audit_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dpaudit`` with ``argv`` (default: the process's); return the exit code."""
    prog = "dpaudit"
    try:
        with _interrupts(lambda: prog), _quiet_libraries():
            args = build_parser().parse_args(argv)
            prog = f"dpaudit {args.command}"
            return int(args.run(args))
    except SystemExit as exc:  # argparse: --help, --version, or a one-line usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    except KeyboardInterrupt as exc:
        detail = str(exc).strip()
        _one_line(f"{prog}: interrupted" + (f"; {detail}" if detail else ""))
        return 130
    except (InputError, AccountingError) as exc:
        _one_line(f"{prog}: error: {exc}")
        return 2
    except BrokenPipeError:
        # `dpaudit ... | head`: the reader left; nothing more to say.
        _silence_stdout()
        return 141
    except Exception as exc:
        import os

        if os.environ.get("DPAUDIT_DEBUG"):
            raise
        what = str(exc).strip().splitlines()
        _one_line(
            f"{prog}: error: unexpected {type(exc).__name__}" + (f": {what[0]}" if what else "")
            + " (a bug; rerun with DPAUDIT_DEBUG=1 for the traceback)"
        )
        return 2


def _one_line(message: str) -> None:
    """``message`` as one line on stderr (a message with newlines is joined)."""
    sys.stderr.write(" ".join(message.split()) + "\n")
    sys.stderr.flush()


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _quiet_libraries:
    """Keep library chatter off the terminal while a command runs.

    numpy's floating-point RuntimeWarnings (overflow while a calibration
    brackets a huge ε, say) are not the user's business: the result or the
    error says what matters. Other warnings print as one line each, once.
    dp-accounting logs every RDP order it drops through absl; the results'
    notes already say what matters.
    """

    def __enter__(self) -> None:
        import logging
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        shown: set[str] = set()

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            lines = str(message).strip().splitlines()
            text = lines[0] if lines else category.__name__
            if text not in shown:
                shown.add(text)
                _one_line(f"dpaudit: warning: {text}")

        warnings.showwarning = show
        self._absl = logging.getLogger("absl")
        self._level = self._absl.level
        self._absl.setLevel(logging.ERROR)

    def __exit__(self, *exc) -> None:
        self._absl.setLevel(self._level)
        self._catch.__exit__(*exc)


class _interrupts:
    """Make one Ctrl-C end the process, whatever library code it lands in.

    An interrupt raised inside a third party's import can be swallowed by that
    library's ``except BaseException`` fallback, and the command would run on
    as if nothing happened. The handler still raises KeyboardInterrupt (the
    audits save their finished runs on the way out), and it also starts a
    watchdog that ends the process if nothing has stopped it a little later.
    """

    GRACE_SECONDS = 15.0  # room for an audit pool to stop and save its runs

    def __init__(self, prog: Callable[[], str]) -> None:
        import threading

        self._prog = prog
        self._finished = threading.Event()  # main() returned: the interrupt was not swallowed

    def __enter__(self) -> None:
        import signal

        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread (main() called from a thread): leave it be
            self._previous = None

    def __exit__(self, *exc) -> None:
        import signal

        self._finished.set()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        import threading

        threading.Thread(target=self._watchdog, daemon=True).start()
        raise KeyboardInterrupt

    def _watchdog(self) -> None:
        import os

        if self._finished.wait(self.GRACE_SECONDS):
            return
        _one_line(f"{self._prog()}: interrupted")
        os._exit(130)


def run() -> None:
    """The ``dpaudit`` console command: :func:`main` with the process's argv, then exit."""
    code = main()
    if code == 130:
        # CPython ends a process by SIGINT (status -2, not 130) when an interrupt passed through
        # a C extension's PyRun_* call, torch's import for one, even though main() caught it.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()

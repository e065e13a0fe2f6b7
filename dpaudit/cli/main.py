"""Entry point: ``dpaudit <command> ...``; input errors are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from dpaudit.cli import audit_cmd, certify_cmd, epsilon_cmd, sigma_cmd
from dpaudit.errors import AccountingError, InputError

COMMANDS = (epsilon_cmd, sigma_cmd, certify_cmd, audit_cmd)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are a single line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dpaudit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # dp-accounting logs every RDP order it drops for small σ through absl; the
    # result's notes already say what matters, so keep the terminal readable.
    logging.getLogger("absl").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (InputError, AccountingError) as exc:
        sys.stderr.write(f"dpaudit {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"dpaudit {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Calling the CLI in-process, and what every failure must look like (shared by the CLI tests)."""

from __future__ import annotations

from dpaudit.cli.main import main


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``dpaudit argv``."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, out: str, err: str, words) -> None:
    """Exit code 2, nothing on stdout, one line on stderr without a traceback, naming ``words``."""
    assert rc == 2, (rc, out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)

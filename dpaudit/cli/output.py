"""Writing results: files atomically with the user's permissions, JSON, tables and text that fit a terminal."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import IO, Any, Callable, Sequence

#: ``--json`` without a path: JSON on stdout.
STDOUT = "-"
#: Widest line the CLI prints (tables and wrapped text), whatever the terminal.
MAX_WIDTH = 100


def clean_json(value: Any) -> Any:
    """NaN/inf become null so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(clean_json(obj), indent=2)


def _file_mode() -> int:
    """0666 less the process umask: what ``open(path, "w")`` would create (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write to a temporary file beside ``path`` and rename, so a crash never leaves half a file.

    The file gets the mode a plain ``open`` would give it (mkstemp creates 0600).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class JsonTarget:
    """Where ``--json`` goes: a file, or the stdout of the moment the flags were read.

    Holding the stream lets the CLI send its text to stderr while JSON owns stdout.
    """

    def __init__(self, value: str, stream: IO[str] | None = None) -> None:
        self.path = None if value == STDOUT else value
        self.stream = stream if stream is not None else sys.stdout

    @property
    def to_stdout(self) -> bool:
        return self.path is None

    def write(self, data: Any) -> str | None:
        """Write ``data`` as JSON; return the file path (None for stdout)."""
        text = dumps(data) + "\n"
        if self.path is None:
            self.stream.write(text)
            self.stream.flush()
            return None
        write_atomic(self.path, text)
        return self.path

    def __str__(self) -> str:
        return self.path or "stdout"


def emit_json(target: "JsonTarget | str | None", data: Any) -> str | None:
    """Write ``data`` to a ``--json`` target (a :class:`JsonTarget`, a path, or '-' for stdout)."""
    if target is None:
        return None
    if not isinstance(target, JsonTarget):
        target = JsonTarget(str(target))
    return target.write(data)


def emit_outputs(args: Any, out: IO[str], data: Any, write_report: Callable[[str], Any]) -> None:
    """A command's ``--json`` (``data``) and ``--report`` outputs, each announced on ``out``.

    ``write_report(path)`` returns the file written, or a list of them.
    """
    path = emit_json(args.json, data)
    if path:
        print(f"json: {path}", file=out)
    if args.report:
        written = write_report(args.report)
        files = written if isinstance(written, (list, tuple)) else [written]
        print(f"report: {', '.join(str(f) for f in files)}", file=out)


def check_output_path(flag: str, value: str | Path, *, directory_ok: bool = False) -> Path:
    """Fail now, before the long work, if ``value`` cannot be written as a file.

    A missing parent directory is fine (it is created when the file is
    written); a path that is a directory, lies under a file, or under a
    directory this process cannot write is an :class:`InputError` naming ``flag``.
    """
    from dpaudit.errors import InputError

    text = str(value)
    p = Path(text)
    if not directory_ok and (text.endswith(("/", os.sep)) or p.is_dir()):
        raise InputError(f"{flag} {text}: is a directory; give a file path such as {p / 'result'}"
                         f"{'.md' if flag == '--report' else '.json'}")
    ancestor = p.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag} {text}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {text}: cannot write in {ancestor} (permission denied)")
    if p.exists() and not p.is_dir() and not os.access(p, os.W_OK):
        raise InputError(f"{flag} {text}: the file exists and is not writable")
    return p


def width() -> int:
    """Columns to fill: the terminal's, at most :data:`MAX_WIDTH`."""
    return min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH)


def wrap(text: str, indent: str = "", first: str = "") -> str:
    """``text`` wrapped to :func:`width`: the first line starts with ``first``, the others with ``indent``."""
    return textwrap.fill(
        text, width=width(), initial_indent=first, subsequent_indent=indent,
        break_long_words=False, break_on_hyphens=False,
    )


def table(rows: Sequence[dict[str, Any]], formats: dict[str, str] | None = None) -> str:
    """Rows of dicts as a plain table: text left-aligned, numbers right-aligned, two spaces apart.

    ``formats`` maps a column to a format spec for its numbers (e.g. ``".4f"``);
    None and NaN print as "-". A column whose cells are all empty is left out.
    """
    formats = formats or {}
    if not rows:
        return ""
    columns = [c for c in rows[0] if any(r.get(c) not in (None, "") for r in rows)]

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def cell(col: str, v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if col in formats and is_number(v):
            return format(v, formats[col])
        return str(v)

    body = [[cell(c, r.get(c)) for c in columns] for r in rows]
    right = [all(is_number(r.get(c)) or r.get(c) is None for r in rows) for c in columns]
    widths = [max(len(c), *(len(line[i]) for line in body)) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            x.rjust(w) if r else x.ljust(w) for x, w, r in zip(cells, widths, right)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(b) for b in body])

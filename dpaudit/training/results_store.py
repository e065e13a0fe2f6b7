"""The resumable results file of a training audit: JSON lines, one per trained model.

The first line is a header holding a fingerprint of everything a model's
numbers depend on (mechanism source, run, data, canaries, seed, optimiser).
Each later line is one model's record: its id, seed, canary membership,
canary scores and test accuracy. After every chunk of models the whole file
is rewritten to a temporary file and renamed over the old one, so it always
holds whole chunks: an interrupted audit loses at most the chunk in flight,
and rerunning it with the same file trains only the models that are missing.
Floats are stored with ``repr`` precision, so a resumed audit computes
exactly the numbers an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from dpaudit.cli.output import write_atomic
from dpaudit.errors import InputError

FORMAT = "dpaudit-training-audit/1"


class TrainingResultsFile:
    """Header + one record per model, keyed by model id (``record["model"]``)."""

    def __init__(self, path: str | Path, fingerprint: str, header: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.header = {"format": FORMAT, "fingerprint": fingerprint, **(header or {})}
        self._lines: list[str] = []
        #: The header found in an existing file (the one written now for a new file).
        self.stored: dict[str, Any] = self.header

    def open(self) -> dict[int, dict[str, Any]]:
        """The records already in the file (creating it with the header if absent).

        Raises:
            InputError: the file is not a training-audit results file, or it
                belongs to another audit (different fingerprint).
        """
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._lines = [json.dumps(self.header)]
            self._flush()
            return {}
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory; --results needs a file path")
        lines = [l for l in self.path.read_text(errors="replace").split("\n") if l.strip()]
        try:
            stored = json.loads(lines[0])
        except (ValueError, IndexError):
            stored = None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            raise InputError(
                f"{self.path}: not a dpaudit training-audit results file; pick another results file or delete this one"
            )
        if stored.get("fingerprint") != self.fingerprint:
            raise InputError(
                f"{self.path}: holds models of a different training audit (another mechanism file, run, dataset, "
                "canaries, seed or optimiser settings); pick another results file or delete this one"
            )
        self.stored = stored
        records: dict[int, dict[str, Any]] = {}
        kept = [lines[0]]
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                key = int(rec["model"])
            except (ValueError, KeyError, TypeError):
                continue  # damaged: that model is trained again
            records[key] = rec  # a model trained twice (a chunk redone) counts once
            kept.append(line)
        self._lines = kept
        return records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Add one chunk's records; the file is replaced atomically."""
        if not self._lines:
            raise RuntimeError("open() the results file before appending")
        self._lines.extend(json.dumps(r) for r in records)
        self._flush()

    def _flush(self) -> None:
        write_atomic(self.path, "".join(l + "\n" for l in self._lines))

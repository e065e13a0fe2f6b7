"""Many audit runs: seeds, a process pool, a progress bar, and a resumable results file.

Every run is a deterministic function of (audit seed, scenario name, kind,
index) (:func:`run_seed`): whether its canary is in (a fair coin drawn from
that seed), the Poisson samples and the mechanism's noise. So an audit gives
the same numbers whether it ran in one go, in a pool of workers, or in pieces
that were interrupted and resumed.

Results are appended to a JSON-lines file as each chunk of runs finishes (one
``write`` per chunk, flushed and fsynced). The first line is a header with a
fingerprint of everything the runs depend on; a file with another
fingerprint is refused rather than mixed in. A line cut short by a crash is
dropped when the file is next opened.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from dpaudit.audit.gradient_game import canary_direction, name_key, play
from dpaudit.audit.scenarios import Scenario
from dpaudit.audit.statistics import run_statistics
from dpaudit.cli.output import write_atomic
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.probe.randomness import GlobalRandomState, derive_seed
from dpaudit.progress import Progress, plural

#: Identifies the results-file format (bumped whenever the stored numbers change meaning).
FORMAT = "dpaudit-mechanism-audit/1"
MAIN, REF = "main", "ref"
_KIND_CODE = {MAIN: 1, REF: 2}
#: Mechanism calls per chunk of runs handed to a worker (about a second of work).
CALLS_PER_CHUNK = 2000
MAX_CHUNK_RUNS = 64


def run_seed(seed: int, scenario: str, kind: str, index: int) -> int:
    """The seed of one run: everything about it follows from this number."""
    return derive_seed(seed, name_key(scenario), _KIND_CODE[kind], index)


def canary_in(run_seed_: int, kind: str) -> bool:
    """The fair coin that puts the canary in the dataset (reference runs never have it)."""
    return kind == MAIN and bool(derive_seed(run_seed_, 99) & 1)


def held_out(run_seed_: int, fraction: float) -> bool:
    """Whether a run belongs to the part held out to choose the "best" statistic."""
    return (derive_seed(run_seed_, 98) % 1_000_000) < fraction * 1_000_000


@dataclass(frozen=True)
class Job:
    """The runs of one scenario still to do (or to look up)."""

    scenario: Scenario
    factory: MechanismFactory
    n_main: int
    n_ref: int

    def keys(self) -> Iterator[tuple[str, str, int]]:
        for i in range(self.n_main):
            yield (self.scenario.name, MAIN, i)
        for i in range(self.n_ref):
            yield (self.scenario.name, REF, i)


# ----------------------------------------------------------------------------
# One chunk of runs (in this process or a worker)


def _run_chunk(
    factory: MechanismFactory, scenario: Scenario, kind: str, indices: Sequence[int], seed: int
) -> list[dict[str, Any]]:
    direction = canary_direction(scenario, seed)
    records = []
    for i in indices:
        s = run_seed(seed, scenario.name, kind, i)
        world = canary_in(s, kind)
        start = time.perf_counter()
        features = play(factory, scenario, world, s, direction)
        stats = run_statistics(features, scenario.sample_rate)
        records.append({
            "s": scenario.name, "k": kind, "i": int(i), "in": int(world),
            "stats": stats, "sec": round(time.perf_counter() - start, 6),
        })
    return records


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it (one line, the
    # pool shut down), so the workers ignore it instead of printing a traceback each.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


@contextlib.contextmanager
def isolated_torch() -> Iterator[None]:
    """One torch thread (the same arithmetic as in the workers), caller's RNG state restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with GlobalRandomState():
            yield
    finally:
        torch.set_num_threads(threads)


def time_per_step(factory: MechanismFactory, scenario: Scenario, seed: int, max_steps: int = 12) -> float:
    """Seconds per mechanism step in ``scenario``: the median of three short in-world runs.

    Each plays a copy of the scenario cut to about ``max_steps`` steps (the
    results are thrown away; the mechanism is still built for the real run).
    A first one-step run warms up and, if a step is slow (over 0.2 s, e.g. a
    huge full batch), is the answer, so planning never costs much.
    """
    from dataclasses import replace

    from dpaudit.run_config import RunConfig

    def short(steps: int) -> Scenario:
        run = scenario.run
        epochs = max(1, min(run.epochs, -(-steps // run.steps_per_epoch)))
        return replace(scenario, run=RunConfig(**{**run.to_dict(), "epochs": epochs}))

    def timed(sc: Scenario, k: int) -> float:
        start = time.perf_counter()
        play(factory, sc, True, derive_seed(seed, 7, k), canary_direction(sc, seed))
        return (time.perf_counter() - start) / sc.steps

    with isolated_torch():
        first = timed(short(1), 0)
        if first > 0.2:
            return first
        sc = short(max_steps)
        return float(np.median([timed(sc, k) for k in (1, 2, 3)]))


# ----------------------------------------------------------------------------
# The results file


class ResultsFile:
    """Append-only JSON lines: a header, then one record per finished run."""

    def __init__(self, path: str | Path, fingerprint: str, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.header = {"format": FORMAT, "fingerprint": fingerprint, **header}

    def open(self) -> tuple[dict[str, Any] | None, dict[tuple[str, str, int], dict]]:
        """Read what is there: (the stored header or None, finished runs by key).

        Raises:
            InputError: the file is not a results file of this audit.
        """
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_all(self.header, [])
            return None, {}
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail is b"" when the file ends with a newline
        try:
            stored = json.loads(complete[0]) if complete else json.loads(tail)
        except (ValueError, IndexError):
            stored = None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            raise InputError(
                f"{self.path}: not a dpaudit mechanism-audit results file; "
                "pick another --results file or delete this one"
            )
        if stored.get("fingerprint") != self.fingerprint:
            raise InputError(
                f"{self.path}: holds runs of a different audit (another mechanism file, run, seed "
                "or dpaudit version); pick another --results file or delete this one"
            )
        records: dict[tuple[str, str, int], dict] = {}
        good: list[bytes] = []
        for line in complete[1:]:
            try:
                rec = json.loads(line)
                key = (rec["s"], rec["k"], int(rec["i"]))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line: that run is simply redone
            records[key] = rec
            good.append(line)
        if tail or len(good) != len(complete) - 1:
            # Drop a line cut short by a crash (and any damaged one) before appending.
            self._write_lines([complete[0]] + good)
        return stored, records

    def set_header(self, header: dict[str, Any]) -> None:
        """Replace the header (keeping the records), e.g. to store a new plan."""
        self.header = {"format": FORMAT, "fingerprint": self.fingerprint, **header}
        lines = self.path.read_bytes().split(b"\n")
        self._write_lines([json.dumps(self.header).encode()] + [l for l in lines[1:] if l])

    def append(self, records: Sequence[dict]) -> None:
        """Append records with one write, flushed to disk."""
        if not records:
            return
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        with open(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _write_all(self, header: dict, records: Sequence[dict]) -> None:
        self._write_lines([json.dumps(header).encode()] + [json.dumps(r).encode() for r in records])

    def _write_lines(self, lines: Sequence[bytes]) -> None:
        write_atomic(self.path, b"".join(l + b"\n" for l in lines))


# ----------------------------------------------------------------------------
# Running jobs


def _chunks(job: Job, todo: Sequence[tuple[str, str, int]]) -> list[tuple[str, list[int]]]:
    size = max(1, min(MAX_CHUNK_RUNS, CALLS_PER_CHUNK // max(job.scenario.steps, 1)))
    out = []
    for kind in (REF, MAIN):  # reference runs first: they are few
        idx = [i for (_, k, i) in todo if k == kind]
        out.extend((kind, idx[j : j + size]) for j in range(0, len(idx), size))
    return out


def execute(
    jobs: Sequence[Job],
    seed: int,
    results: ResultsFile | None,
    done: dict[tuple[str, str, int], dict],
    *,
    workers: int = 1,
    progress: bool = True,
    max_runs: int | None = None,
    deadline: float | None = None,
) -> dict[tuple[str, str, int], dict]:
    """Run every run of ``jobs`` not in ``done``; return all records (``done`` updated).

    Chunks are started in job order (within a job, reference runs first). At
    ``deadline`` (a ``time.perf_counter()`` value) chunks not yet started are
    dropped; which runs finish then depends on timing only, never on a run's
    own outcome, so the bounds on the finished runs stay valid, and a rerun
    with the same results file does the rest.

    Args:
        jobs: Scenarios and how many runs of each.
        seed: The audit seed.
        results: Where finished chunks are appended (None: keep in memory only).
        done: Records already finished (from the results file).
        workers: Processes; 1 runs everything in this process.
        progress: Show a progress bar. It counts mechanism steps, not runs: a run on
            the user's run costs ~100x a full-batch worst case, so a count of runs
            would promise an ETA of seconds at 97 % and then run for a minute.
        max_runs: Stop after about this many new runs (to test resuming).
        deadline: Start no chunk after this ``time.perf_counter()`` value.
    """
    tasks = []
    for job in jobs:
        todo = [k for k in job.keys() if k not in done]
        tasks.extend((job, kind, idx) for kind, idx in _chunks(job, todo))
    if max_runs is not None:
        kept, n = [], 0
        for t in tasks:
            if n >= max_runs:
                break
            kept.append(t)
            n += len(t[2])
        tasks = kept
    runs_total = sum(len(idx) for _, _, idx in tasks)
    steps_total = sum(len(idx) * job.scenario.steps for job, _, idx in tasks)
    if not tasks:
        return done
    pool = None
    if workers > 1 and len(tasks) > 1:
        # fork, as torch's DataLoader does, with one torch thread per worker (the
        # initializer): no re-import of the caller's __main__, no torch import per worker.
        # The pool is made before the progress bar starts its monitor thread.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    bar = Progress("audit", total=steps_total, unit="step", enabled=progress, unit_scale=True, smoothing=0.05)
    steps_of = {job.scenario.name: job.scenario.steps for job in jobs}
    runs_done = 0

    def finish(records: list[dict]) -> None:
        nonlocal runs_done
        if results is not None:
            results.append(records)
        for r in records:
            done[(r["s"], r["k"], int(r["i"]))] = r
        runs_done += len(records)
        if records:
            bar.set_postfix(f"{runs_done}/{runs_total} runs, {records[-1]['s']}")
        bar.update(sum(steps_of[r["s"]] for r in records))

    ok = False
    try:
        if pool is None:
            with isolated_torch():
                for job, kind, idx in tasks:
                    if deadline is not None and time.perf_counter() > deadline:
                        break
                    finish(_run_chunk(job.factory, job.scenario, kind, idx, seed))
        else:
            # Keep only a few chunks queued, so that the deadline can stop the rest.
            queue = list(tasks)[::-1]
            running: set[cf.Future] = set()
            try:
                while queue or running:
                    while queue and len(running) < 2 * workers:
                        if deadline is not None and time.perf_counter() > deadline:
                            queue.clear()
                            break
                        job, kind, idx = queue.pop()
                        running.add(pool.submit(_run_chunk, job.factory, job.scenario, kind, idx, seed))
                    if not running:
                        break
                    finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        finish(fut.result())
            except BaseException:
                for f in running:
                    f.cancel()
                raise
        ok = True
    finally:
        if ok:
            bar.close(f"{plural(runs_done, 'run')} ({plural(bar.n, 'mechanism step')})")
        else:
            bar.abandon()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return done

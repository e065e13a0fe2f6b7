"""How fast the ``dpaudit`` command answers, as ratios to importing numpy and scipy.stats.

Each command runs as a fresh process, the way a user types it, interleaved
with the baseline ``python -c "import numpy, scipy.stats"`` in every round so
that both see the same machine load; the table gives the median wall time of
the rounds and the median CPU time (what a busy machine does not inflate),
the peak memory (max RSS) of the process, and the ratio of the medians. Targets (issue 9): ``--help`` and ``--version`` within 2x of the
baseline, ``epsilon --accountant rdp`` within 3x, and the 100,000-step
heterogeneous schedule (bench/accounting.py's case (c)) by PLD from the CLI
in under 7 s of wall time.

    python bench/startup.py               # 7 rounds (about 2 minutes on 2 cores)
    python bench/startup.py --rounds 3 --markdown
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUN = ["--noise-multiplier", "1", "--dataset-size", "60000", "--batch-size", "256", "--epochs", "5",
       "--delta", "1e-5"]


def dpaudit_command() -> list[str]:
    """The installed console script (what a user runs), else ``python -m dpaudit``."""
    script = shutil.which("dpaudit", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return [script] if script else [sys.executable, "-m", "dpaudit"]


def write_long_schedule(directory: Path, steps: int = 100_000) -> Path:
    """bench/accounting.py's case (c): σ_t = 1 + 0.2·cos(2πt/T) + 1e-7·t/T at q = 256/60000, one row per step."""
    t = np.arange(steps)
    sigma = 1.0 + 0.2 * np.cos(2 * np.pi * t / steps) + 1e-7 * t / steps
    path = directory / "case_c.csv"
    with open(path, "w") as fh:
        fh.write("sigma,sample_rate\n")
        fh.writelines(f"{float(s)!r},{256 / 60000!r}\n" for s in sigma)
    return path


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one run of ``cmd``; a failing command is an error."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every command (default 7)")
    parser.add_argument("--long-rounds", type=int, default=3, help="rounds of the 100,000-step schedule (default 3)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)

    dpaudit = dpaudit_command()
    with tempfile.TemporaryDirectory() as tmp:
        long_csv = write_long_schedule(Path(tmp))
        cases = {
            "baseline: python -c 'import numpy, scipy.stats'": ([sys.executable, "-c", "import numpy, scipy.stats"], None),
            "dpaudit --help": (dpaudit + ["--help"], 2.0),
            "dpaudit --version": (dpaudit + ["--version"], 2.0),
            "dpaudit epsilon --accountant rdp (1,170 steps)": (dpaudit + ["epsilon", *RUN, "--accountant", "rdp"], 3.0),
            "dpaudit epsilon (all four accountants, 1,170 steps)": (dpaudit + ["epsilon", *RUN], None),
        }
        long_case = "dpaudit epsilon --schedule (100,000 steps, each its own sigma) --accountant pld"
        long_cmd = dpaudit + ["epsilon", "--schedule", str(long_csv), "--delta", "1e-5", "--accountant", "pld"]
        load_before = os.getloadavg()
        for cmd, _ in cases.values():  # warm the file cache: the first import of torch/scipy reads from disk
            timed(cmd)
        times: dict[str, list[float]] = {name: [] for name in [*cases, long_case]}
        cpu: dict[str, list[float]] = {name: [] for name in times}
        rss: dict[str, float] = {}

        def record(name: str, cmd: list[str]) -> None:
            wall, cpu_s, mb = timed(cmd)
            times[name].append(wall)
            cpu[name].append(cpu_s)
            rss[name] = max(rss.get(name, 0.0), mb)

        for _ in range(args.rounds):
            for name, (cmd, _) in cases.items():
                record(name, cmd)
        for _ in range(args.long_rounds):
            record(long_case, long_cmd)
        load_after = os.getloadavg()

    base = statistics.median(times[next(iter(cases))])
    rows = []
    for name, walls in times.items():
        med = statistics.median(walls)
        limit = cases[name][1] if name in cases else None
        if name == long_case:
            target, met = "< 7 s wall", med < 7.0
        elif limit is not None:
            target, met = f"<= {limit:g}x baseline", med / base <= limit
        else:
            target, met = "", None
        rows.append((name, med, statistics.median(cpu[name]), rss[name], med / base, target,
                     "" if met is None else ("MET" if met else "NOT MET")))

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {args.rounds} rounds "
          f"({args.long_rounds} of the 100,000-step case); dpaudit = {' '.join(dpaudit)}")
    header = ("command", "wall_s", "cpu_s", "max_rss_MB", "ratio", "target", "")
    width = max(len(r[0]) for r in rows)
    print(f"{header[0]:<{width}}  {'wall_s':>6}  {'cpu_s':>6}  {'rss_MB':>6}  {'ratio':>6}  target")
    for name, med, cpu_s, mb, ratio, target, verdict in rows:
        print(f"{name:<{width}}  {med:6.2f}  {cpu_s:6.2f}  {mb:6.0f}  {ratio:6.2f}  {target} {verdict}".rstrip())
    if args.markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("|---|---:|---:|---:|---:|---|---|")
        for name, med, cpu_s, mb, ratio, target, verdict in rows:
            print(f"| `{name}` | {med:.2f} | {cpu_s:.2f} | {mb:.0f} | {ratio:.2f} | {target} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

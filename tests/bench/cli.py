"""How fast the `broker` command answers, against `python -c pass` measured in the same run.

    python tests/bench/cli.py [--runs 9] [--orders 200]

Makes a throw-away installation (a scratch HOME: its per-user data folder, migrated, with
`--orders` orders), then runs each command `--runs` times, interleaved so a busy machine
slows them all alike, from a folder that is not the data's: `python -c pass` (the floor of any
Python program), `python -c "import sqlalchemy.orm"` (the floor of any command that reads the
database), `broker --help`, `broker info` and `broker orders list`. Prints the median and
90th percentile of wall time and the median CPU time of each, and their ratios to
`python -c pass`. Byte-code is written once before timing (the environment's
PYTHONDONTWRITEBYTECODE would make every run compile the broker's modules again, which an
installed broker never does). Absolute times drift with the machine's load; compare ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def broker_command() -> list[str]:
    """The installed console script next to this Python, else the module (same code path)."""
    script = Path(sys.executable).with_name("broker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker.cli"]


def seed(env: dict[str, str], orders: int) -> None:
    """Migrate the scratch installation and store `orders` orders through the real intake."""
    subprocess.run([*broker_command(), "db", "upgrade"], env=env, check=True, capture_output=True)
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from harness import order
from broker.runtime import Runtime
from broker.settings import load_settings
from broker.services.sources import create_source
from broker.services.orders import apply_version
from broker.schemas.order import load_order
rt = Runtime(load_settings())
source, _ = create_source(rt.db, rt.box, "shop", "standard-webhooks", None)
with rt.db.begin() as session:
    from broker.models import Source
    row = session.get(Source, source.id)
    for n in range({orders}):
        apply_version(session, row, load_order(order(f"B-{{n}}")))
rt.close()
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; fails loudly if the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--orders", type=int, default=200)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="fobo-bench-cli-"))
    try:
        elsewhere = scratch / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("BROKER_") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update(HOME=str(scratch / "home"), XDG_DATA_HOME=str(scratch / "home" / "data"),
                   XDG_CONFIG_HOME=str(scratch / "home" / "config"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        seed(env, args.orders)
        broker = broker_command()
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import sqlalchemy.orm'": [sys.executable, "-c", "import sqlalchemy.orm"],
            "broker --help": [*broker, "--help"],
            "broker info": [*broker, "info"],
            "broker orders list": [*broker, "orders", "list"],
        }
        for cmd in commands.values():  # warm-up: byte-code written, files in the page cache
            run(cmd, env, elsewhere)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                wall, cpu = run(cmd, env, elsewhere)
                walls[name].append(wall)
                cpus[name].append(cpu)
        base_wall = statistics.median(walls["python -c pass"])
        base_cpu = statistics.median(cpus["python -c pass"])
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"broker command start-up: {args.runs} interleaved runs each, {args.orders} orders, "
              f"{os.cpu_count()} CPUs, load average {load:.2f}; command: {' '.join(broker)}")
        print(f"{'command':<36} {'wall p50':>9} {'wall p90':>9} {'CPU p50':>8} {'x pass (wall)':>14} "
              f"{'x pass (CPU)':>13}")
        for name in commands:
            ordered = sorted(walls[name])
            p50, p90 = statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            cpu = statistics.median(cpus[name])
            print(f"{name:<36} {p50:>8.3f}s {p90:>8.3f}s {cpu:>7.3f}s {p50 / base_wall:>14.1f} "
                  f"{cpu / base_cpu if base_cpu else float('nan'):>13.1f}")
        target = statistics.median(walls["broker orders list"])
        print(f"target 'well under a second' for simple commands: broker orders list p50 {target:.2f} s "
              f"-> {'met' if target < 0.8 else 'missed'} on this run; broker --help p50 "
              f"{statistics.median(walls['broker --help']):.2f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

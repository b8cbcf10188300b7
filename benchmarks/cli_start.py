"""How long a `carepath` command takes to start (issue 15: "under 0.5 s").

Runs each command line R times as an operator would (a new process each time, the
interpreter, imports and settings included) and prints p50 and max beside the bare
interpreter's start-up. `carepath clock show` is pointed at a closed local port, so it
measures its start-up, its imports and one refused connection, not a server.

    .venv/bin/python benchmarks/cli_start.py [--runs 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from harness import CAREPATH, base_env, free_port, machine, percentiles, write_results


def wall_times(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    env = base_env() | {"CAREPATH_COORDINATOR_URL": f"http://127.0.0.1:{free_port()}"}
    commands = {
        "python -c pass (the floor)": [sys.executable, "-c", "pass"],
        "carepath --help": [CAREPATH, "--help"],
        "carepath token": [CAREPATH, "token", "--role", "mdt", "--user", "bench"],
        "carepath clock show (refused)": [CAREPATH, "clock", "show"],
    }
    wall_times(commands["carepath token"], env, 2)  # warm the file cache first
    figures = {}
    print(f"{'command':34} {'p50 s':>7} {'max s':>7}")
    for label, command in commands.items():
        spread = percentiles(wall_times(command, env, args.runs))
        figures[label] = spread
        print(f"{label:34} {spread['p50']:7.3f} {spread['max']:7.3f}", flush=True)
    out = write_results("cli_start", {"machine": machine(), "runs": args.runs, "figures": figures})
    print(f"written: {out}")


if __name__ == "__main__":
    main()

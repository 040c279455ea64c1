#!/usr/bin/env python3
"""Run the seeded randomized simulation (tests/simulation/world.py) for many seeds, each on a
fresh migrated database: SQLite, and PostgreSQL when PAYSVC_TEST_DATABASE_URL is set (or as
`--database` says). Prints one line per seed and the command that replays a failing one.

    scripts/simulate --seed 17               # replay one seed
    scripts/simulate --seeds 200 [--from 1000] [--database sqlite|postgresql|all]
    scripts/simulate --seeds 50 --payments 30 --steps 400   # bigger runs
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import pg_scratch  # noqa: E402

from paysvc.db import migrate  # noqa: E402
from tests.simulation.world import Options, simulate  # noqa: E402


def run_seed(database: str, seed: int, options: Options) -> list[str]:
    if database == "postgresql":
        url = pg_scratch.create(os.environ["PAYSVC_TEST_DATABASE_URL"], prefix="paysvc_sim")
        try:
            migrate.upgrade(url)
            result = asyncio.run(simulate(url, seed, options))
        finally:
            pg_scratch.drop(url)
    else:
        workdir = tempfile.mkdtemp(prefix="simulate-")
        try:
            url = f"sqlite:///{workdir}/sim.db"
            migrate.upgrade(url)
            result = asyncio.run(simulate(url, seed, options))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{database} {result.summary()}", flush=True)
    for violation in result.violations:
        print(f"  VIOLATION {violation}", flush=True)
    return result.violations


def main() -> int:
    # A crash cancels connections mid-transaction and refuses requests: the pool's and the
    # server's noise about that is expected (what matters is checked after the run).
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run this one seed")
    which.add_argument("--seeds", type=int, default=10, help="run this many seeds")
    parser.add_argument("--from", dest="first", type=int, default=1, help="first seed")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "all"), default="all")
    defaults = Options()
    parser.add_argument("--payments", type=int, default=defaults.payments)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--crash-rate", type=float, default=defaults.crash_rate)
    parser.add_argument("--window-rate", type=float, default=defaults.window_rate)
    args = parser.parse_args()
    databases = [args.database] if args.database != "all" else ["sqlite"]
    if args.database == "all" and os.environ.get("PAYSVC_TEST_DATABASE_URL"):
        databases.append("postgresql")
    if "postgresql" in databases and not os.environ.get("PAYSVC_TEST_DATABASE_URL"):
        parser.error("--database postgresql needs PAYSVC_TEST_DATABASE_URL")
    options = Options(
        payments=args.payments,
        steps=args.steps,
        fault_rate=args.fault_rate,
        crash_rate=args.crash_rate,
        window_rate=args.window_rate,
    )
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    failed: list[tuple[str, int]] = []
    for database in databases:
        for seed in seeds:
            if run_seed(database, seed, options):
                failed.append((database, seed))
    clean = len(seeds) * len(databases) - len(failed)
    print(f"simulate: {clean} of {len(seeds) * len(databases)} runs clean")
    extra = "" if options == defaults else " " + " ".join(sys.argv[1:])
    for database, seed in failed:
        print(f"  FAILED: scripts/simulate --seed {seed} --database {database}{extra}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The `collarstream` command: demo, worker, simulate, analyze."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from collarstream.config import ConfigError, env_keys, from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="collarstream",
        description="Satellite-collar telemetry: steps, home ranges and geofence alerts.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="embedded broker + worker + collar simulator, live")
    demo.add_argument(
        "--duration",
        type=float,
        default=150.0,
        help="seconds to run; 0 = until Ctrl-C (default 150)",
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=5400.0,
        help="simulated seconds per wall second (default 5400: 1.5 h/s)",
    )
    demo.add_argument("--seed", type=int, default=7)

    sub.add_parser(
        "worker",
        help="run the stream worker (settings from the environment: "
        + ", ".join(env_keys().values())
        + ")",
    )

    sim = sub.add_parser("simulate", help="write simulated collar fixes as a Movebank CSV")
    sim.add_argument("--out", type=Path, required=True)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--days", type=float, default=30.0)

    ana = sub.add_parser("analyze", help="run the core over a Movebank CSV, no broker")
    ana.add_argument("csv", type=Path)
    ana.add_argument("--out", type=Path, required=True)
    ana.add_argument("--fences", type=Path, help="urban-edge fence GeoJSON (default: Almaty)")
    ana.add_argument("--countries", type=Path, help="admin-0 layer (default: Natural Earth)")
    ana.add_argument(
        "--profile",
        default=None,
        help="species profile for every animal (default: from the taxon column)",
    )

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from collarstream.demo import run_demo

        run_demo(args.duration, args.speed, args.seed)
        return 0
    if args.command == "worker":
        from collarstream.stream.worker import run_worker

        run_worker(from_env())
        return 0
    if args.command == "simulate":
        from collarstream.simulate import simulate_to_csv

        simulate_to_csv(args.out, seed=args.seed, days=args.days)
        print(f"wrote {args.out}")
        return 0
    from collarstream.analyze import analyze

    report = analyze(
        args.csv, args.out, fences=args.fences, countries=args.countries, profile=args.profile
    )
    print(report.summary())
    return 0

"""The ``--set`` / ``--scenario`` conventions every simulation command shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UsageError


def add_scenario_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", metavar="FILE.toml",
                   help="scenario file: NAME = VALUE lines (see docs/PARAMETERS.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter (repeatable; applied after --scenario)")


def scenario_from_args(args: argparse.Namespace):  # -> sim.Scenario
    """Default scenario, then the file, then each --set, validated at every step."""
    from sim import ParameterError, Scenario, parse_assignment

    try:
        sc = Scenario()
        if args.scenario:
            path = Path(args.scenario)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--scenario={args.scenario}: cannot read ({exc.strerror or exc})") from None
            except UnicodeDecodeError:
                raise UsageError(f"--scenario={args.scenario}: not UTF-8 text") from None
            try:
                sc = Scenario.from_toml(text, sc)
            except ParameterError as exc:
                raise UsageError(f"--scenario={args.scenario}: {exc}") from None
        pairs = dict(parse_assignment(a) for a in args.overrides)
        return sc.with_overrides(pairs)
    except ParameterError as exc:
        raise UsageError(str(exc)) from None

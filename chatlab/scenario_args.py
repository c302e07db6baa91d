"""The ``--set`` / ``--scenario`` conventions every simulation command shares."""

from __future__ import annotations

import argparse

from .errors import UsageError, read_text


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
            text = read_text(args.scenario, f"--scenario={args.scenario}")
            try:
                sc = Scenario.from_toml(text, sc)
            except ParameterError as exc:
                raise UsageError(f"--scenario={args.scenario}: {exc}") from None
        pairs = dict(parse_assignment(a) for a in args.overrides)
        return sc.with_overrides(pairs)
    except ParameterError as exc:
        raise UsageError(str(exc)) from None

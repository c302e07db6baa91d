"""``chatlab`` entry point: one sub-command per module, dispatched lazily so that
``chatlab compare`` does not import the server stack and vice versa.

Bad input never produces a traceback: every error a user can cause is printed
as one line naming the parameter, the value and what is allowed, and the
process exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from .errors import UsageError

#: sub-command -> module that provides ``add_arguments(parser)`` and ``run(args) -> int``.
#: Those modules import their heavy dependencies inside ``run`` only.
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("chatlab.compare_cmd", "simulate short polling, long polling and WebSockets on one workload"),
    "crash": ("chatlab.crash_cmd", "simulate a server crash, partition or delivery outage and the reconnect storm"),
    "sweep": ("chatlab.sweep_cmd", "run a parameter sweep file into tidy Parquet rows; `sweep summarize DIR` for a table"),
    "plot": ("chatlab.plot_cmd", "plot a sweep's metric against a parameter, one line per value of another, with CIs"),
    "capacity": ("chatlab.capacity_cmd", "find how many clients one connection server holds within an SLO, and servers needed"),
    "loadgen": ("chatlab.loadgen_cmd", "drive a reference server process with real clients and measure it"),
    "calibrate": ("chatlab.calibrate_cmd", "measure the server's CPU per operation and header sizes into a scenario file"),
    "validate": ("chatlab.validate_cmd", "compare the simulation with load-generator measurements, per transport and load"),
    "serve": ("chatlab.serve_cmd", "run the reference chat server (embedded fakeredis + SQLite by default)"),
    "cluster": ("chatlab.cluster_cmd", "run N reference servers behind HAProxy on a shared Redis and PostgreSQL"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only *command*'s module is imported to add its arguments."""
    parser = _Parser(prog="chatlab", description="Chat Design Lab: model and measure real-time chat transports.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        command = next((a for a in argv if not a.startswith("-")), None)
        args = build_parser(command).parse_args(argv)
        return int(importlib.import_module(args._module).run(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `chatlab ... | head` closed the pipe: stop quietly, as cat would
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

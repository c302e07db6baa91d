"""The one kind of error the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """A user error: the message names the parameter, the value and what is allowed."""


def read_text(path: str | Path, label: str, hint: str = "") -> str:
    """The UTF-8 text of *path*, or a one-line :class:`UsageError` starting with *label*
    (e.g. ``--scenario=FILE``) that says why it cannot be read; *hint* is added after."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{label}: cannot read ({exc.strerror or exc}){hint}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{label}: not UTF-8 text") from None

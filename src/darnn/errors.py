"""The two exceptions whose message is meant for the user, not a traceback."""

from __future__ import annotations


class RunError(Exception):
    """A problem the user can fix (run directory, model or checkpoint file); one paragraph."""


class ConfigError(RunError):
    """A config file, section, key or value is invalid; the message names it."""

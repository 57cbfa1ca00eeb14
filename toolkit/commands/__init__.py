"""One module per `vpatch` subcommand; each has `register(subparsers)` and sets `run`."""

from toolkit.commands import apply, check, export, fetch, pin, status

COMMANDS = (pin, fetch, apply, export, check, status)

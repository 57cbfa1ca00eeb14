"""One module per `vpatch` subcommand; each has `register(subparsers)` and sets `run`."""

from toolkit.commands import (
    apply,
    build,
    check,
    ci,
    conform,
    doctor,
    export,
    fetch,
    import_,
    kv_watch,
    pin,
    rebase,
    report,
    retire,
    status,
    verify,
)

COMMANDS = (
    pin,
    fetch,
    apply,
    export,
    import_,
    check,
    rebase,
    status,
    build,
    verify,
    doctor,
    kv_watch,
    conform,
    ci,
    report,
    retire,
)

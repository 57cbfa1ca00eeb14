"""The `vpatch` console script: a build's copy started before the imports, then `toolkit.cli.main`.

Kept to the standard library until the speculative copy runs (`toolkit.wheel.speculate`): importing
`toolkit.cli` and the build's modules takes ~100 ms, which the copy of a stock wheel's unchanged members
overlaps instead of following.
"""

from __future__ import annotations

import sys


def console() -> int:
    """`main`, with the copy the last same build planned running beside it; its objects then left to the end.

    At exit the interpreter's collections walk every object the run made (~10-15 ms after a build), memory
    the process's end returns anyway; frozen objects are skipped. Not in `main`: in-process callers (the
    tests) go on running and collecting."""
    from toolkit.wheel import speculate

    try:
        speculate.start(sys.argv[1:])
        from toolkit.cli import main

        code = main()
    finally:
        speculate.end()  # a copy the build did not take over is cancelled and its file removed
    import gc

    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console())

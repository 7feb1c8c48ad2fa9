"""Faithful G′ fit vs the fast path (issue #6); same as ``ganpaint bench``.

python benchmarks/bench_fast.py --models dcgan progan --ablations --json out.json
"""

from __future__ import annotations

import argparse
import sys

from ganpaint.server import cli_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench_fast")
    cli_bench.register(parser.add_subparsers(dest="cmd"))
    sys.exit(cli_bench.cmd_bench(parser.parse_args(["bench", *sys.argv[1:]])))

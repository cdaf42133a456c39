#!/usr/bin/env python3
"""Same as `attnseq plot-attention ...`: see `attnseq plot-attention --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["plot-attention", *sys.argv[1:]]))

#!/usr/bin/env python3
"""Same as `attnseq plot-curves ...`: see `attnseq plot-curves --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["plot-curves", *sys.argv[1:]]))

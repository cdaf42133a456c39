#!/usr/bin/env python3
"""Same as `attnseq bench ...`: see `attnseq bench --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

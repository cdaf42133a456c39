#!/usr/bin/env python3
"""Same as `attnseq make-data ...`: see `attnseq make-data --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-data", *sys.argv[1:]]))

#!/usr/bin/env python3
"""Same as `attnseq eval ...`: see `attnseq eval --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))

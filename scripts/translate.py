#!/usr/bin/env python3
"""Same as `attnseq translate ...`: see `attnseq translate --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["translate", *sys.argv[1:]]))

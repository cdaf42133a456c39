#!/usr/bin/env python3
"""Same as `attnseq train ...`: see `attnseq train --help`."""
import sys

from attnseq.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

"""``python -m edge.classifier_bench``: the name scripts used before ``emotion-edge bench --classifier``."""

import sys

from edge.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--classifier", *sys.argv[1:]]))

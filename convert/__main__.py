"""`python -m convert CHECKPOINT.pt OUT_DIR [--image-size N] [--overwrite]`: `samv2 convert`."""

import sys

from samv2_jax.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))

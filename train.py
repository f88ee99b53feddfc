"""Train an FCN: python train.py [--config FILE ...] [key=value ...]  (see README.md)."""

import sys

from fcn.engine import main

if __name__ == "__main__":
    sys.exit(main())

"""predict.py: not built yet (see the open issues); it exits with an error rather than pretend."""

import sys

if __name__ == "__main__":
    sys.exit("error: predict.py is not built yet")

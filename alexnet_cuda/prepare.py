"""python -m alexnet_cuda.prepare --data IMAGEFOLDER --out PREPARED: see alexnet_cuda.train.preprocess."""

import sys

from .train.preprocess import main

if __name__ == "__main__":
    sys.exit(main())

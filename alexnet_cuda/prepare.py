"""python -m alexnet_cuda.prepare --data IMAGEFOLDER --out PREPARED: see alexnet_cuda.train.prepare."""

import sys

from .train.prepare import main

if __name__ == "__main__":
    sys.exit(main())

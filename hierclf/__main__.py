"""``python -m hierclf`` (and ``torchrun -m hierclf train ...``)."""

import sys

from hierclf.cli import main

if __name__ == "__main__":
    sys.exit(main())

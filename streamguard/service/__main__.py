"""``python -m streamguard.service run ...``: the same as ``streamguard run ...``."""

import sys

from streamguard.service.command import main

if __name__ == "__main__":
    sys.exit(main())

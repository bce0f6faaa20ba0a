"""``python -m streamguard.bench [flags]``: the same as ``streamguard bench``."""

from __future__ import annotations

import sys

from streamguard.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())

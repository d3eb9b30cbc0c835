"""
``make parity``: the resumable operators against the providers' own unit tests (see
scripts/parity_kit and docs/testing.md, "Drop-in, proven against the provider's own tests").
"""

from __future__ import annotations

import sys

from parity_kit.main import main

if __name__ == "__main__":
    sys.exit(main())

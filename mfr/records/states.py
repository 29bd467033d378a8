"""A submission's states, defined once.

    queued -> validating -> embedding -> scoring -> scored
                  |             |           |
                  +-> rejected  +-----------+-> failed      (any pending state) -> cancelled

The same list is the CHECK constraint of ``submissions.state`` (migration 0001).
"""

from __future__ import annotations

PENDING = ("queued", "validating", "embedding", "scoring")
TERMINAL = ("scored", "rejected", "failed", "cancelled")

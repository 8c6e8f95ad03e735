"""Gossip test helpers: one thread for any numeric work, small clusters, seeded everything."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

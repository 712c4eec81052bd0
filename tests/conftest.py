"""Test-wide settings.

Hypothesis runs derandomized by default, so CI draws the same examples on every run (a
property test that fails, fails again, with the same example); set
``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples while developing.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("singledir", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "singledir"))

"""Limits read from a data file while this module is imported (its source never changes)."""

import json
import os

with open(os.path.join(os.path.dirname(__file__), "limits.json")) as _handle:
    LIMITS = json.load(_handle)

"""Module state that a test module changes when it is imported."""

LOADS = 0

"""Scheduling: who runs which tests, when (pure), and the timing history it learns from."""

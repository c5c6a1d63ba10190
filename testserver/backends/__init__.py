"""Warm backends for testrepository and stestr: the per-project daemon and its pool."""

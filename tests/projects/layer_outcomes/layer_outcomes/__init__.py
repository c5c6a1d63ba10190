"""Sample project for tests/test_results.py: every unittest outcome, fixtures, subtests."""

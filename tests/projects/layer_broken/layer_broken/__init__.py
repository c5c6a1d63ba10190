"""Sample project: modules that fail to load (test_syntax_error.py is written by the tests)."""

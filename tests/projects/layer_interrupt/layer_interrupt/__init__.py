"""Sample project for tests/test_execution.py: interrupts, exits and stops."""

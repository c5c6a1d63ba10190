"""Sample project: tests that write output in every way a process can."""

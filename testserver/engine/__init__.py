"""The test engine: loading, running, results and output capture (unittest today)."""

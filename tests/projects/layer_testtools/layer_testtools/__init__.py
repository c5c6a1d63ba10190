"""Sample project: testtools.TestCase with details and skips."""

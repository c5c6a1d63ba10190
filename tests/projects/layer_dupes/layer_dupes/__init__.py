"""Sample project: the same test id loaded twice."""

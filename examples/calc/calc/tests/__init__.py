"""The calc test suite: plain unittest, plus one testtools test case."""

"""testtools reports outcomes with details= instead of exc_info."""

import testtools
from testtools.content import text_content


class WithDetails(testtools.TestCase):
    def test_pass_with_detail(self):
        self.addDetail("log", text_content("a log line"))

    def test_fail_with_detail(self):
        self.addDetail("log", text_content("context for the failure"))
        self.assertEqual(1, 2)

    def test_error(self):
        raise ValueError("testtools error")

    def test_skip(self):
        self.skipTest("testtools skip")

    def test_xfail(self):
        self.expectFailure("known bug", self.assertEqual, 1, 2)

import testtools


class ToolsSub(testtools.TestCase):
    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                if i == 1:
                    self.fail("one fails")
                if i == 2:
                    self.skipTest("two skips")

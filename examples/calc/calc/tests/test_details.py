"""A testtools test case that attaches details (extra named content) to its result."""

from testtools import TestCase
from testtools.content import text_content
from testtools.matchers import Equals, IsInstance

from calc import evaluate


class TestWorkedExample(TestCase):
    def test_worked_example_is_attached(self):
        expression = "(1 + 2) * 3 ^ 2"
        result = evaluate(expression)
        self.addDetail("expression", text_content(expression))
        self.addDetail("result", text_content(str(result)))
        self.assertThat(result, Equals(27))

    def test_results_are_exact(self):
        self.assertThat(evaluate("6 / 4"), Equals(3 / 2))
        self.assertThat(evaluate("6 / 3"), IsInstance(int))

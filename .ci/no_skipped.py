"""Fail CI when its JUnit report shows a suite that shrank: skipped, deselected or missing tests.

python .ci/no_skipped.py REPORT.xml

The rules, the minimum counts and the skips allowed by name are in tests/skip_guard.py
(also the pytest plugin, `-p tests.skip_guard`, that records how the tests were selected).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import skip_guard  # noqa: E402 (after the path it is found on)

if __name__ == "__main__":
    (report,) = sys.argv[1:]
    problems = skip_guard.problems(report)
    for line in problems:
        print(f"[ci] {line}", file=sys.stderr)
    if problems:
        print("[ci] CI must run every test: a green run proves them all", file=sys.stderr)
    sys.exit(1 if problems else 0)

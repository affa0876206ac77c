"""Fail when a junitxml report holds a skipped test from the given modules (CI: `.ci/run`).

python .ci/no_skipped.py REPORT.xml tests.e2e tests.macsim
"""

import sys
import xml.etree.ElementTree as ElementTree


def skipped(report: str, prefixes: list[str]) -> list[str]:
    found = []
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}"
        if case.find("skipped") is not None and name.startswith(tuple(prefixes)):
            found.append(f"{name}: {case.find('skipped').get('message', '')}")
    return found


if __name__ == "__main__":
    report, *prefixes = sys.argv[1:]
    problems = skipped(report, prefixes)
    for line in problems:
        print(f"[ci] skipped, but CI must run it: {line}", file=sys.stderr)
    sys.exit(1 if problems else 0)

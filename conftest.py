# httpcore imports trio when it is installed, and trio needs select.epoll,
# which gevent's monkey-patching removes: import it first.
import httpcore  # noqa: F401, I001

# pyinfra's CLI monkey-patches the standard library with gevent (the plan
# harness runs pyinfra in-process).
import pyinfra_cli  # noqa: F401

import os  # noqa: E402 (after the imports above, which must come first)


def pytest_terminal_summary(terminalreporter):
    """Loudly: without a Docker engine and without CI set, the e2e and sim-Mac tests were skipped.

    Such a run is green but is not the run CI makes (`.ci/run` sets CI: there a missing engine
    fails them, and any skip fails the run).
    """
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "no Docker engine" in str(r.longrepr)]
    if not skipped or os.environ.get("CI"):
        return
    terminalreporter.write_sep("!", f"{len(skipped)} e2e and simulated-Mac tests were SKIPPED", red=True, bold=True)
    for line in (
        "No Docker engine answers, and CI is not set: this run did not converge any host.",
        "It is NOT the run CI makes. Start an engine with `bash .ci/setup`, or set CI=1 to fail instead.",
    ):
        terminalreporter.write_line(line, red=True, bold=True)

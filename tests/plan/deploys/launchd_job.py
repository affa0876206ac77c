"""One model server as a launchd job, for the plan tests of tasks.launchd.job.

Host data: the usual kitty_* values, plus `launchd_test_inputs` (what the
running server depends on, or None) to exercise the kickstart path.
"""

from pyinfra import host

from tasks import config, launchd

BINARY = "/opt/kitty/current/bin/llama-server"
INPUTS_PATH = "/opt/kitty/state/launchd/q4.inputs"

cfg = config.load(host.data)
server = cfg.servers["q4"]
job_label = launchd.label(cfg, "q4")

launchd.job(
    name="Model server q4 (launchd)",
    job_label=job_label,
    plist=launchd.server_plist(cfg, "q4", server, binary=BINARY, user="admin"),
    inputs=host.data.get("launchd_test_inputs"),
    inputs_path=INPUTS_PATH if host.data.get("launchd_test_inputs") else None,
    present=server.enabled,
    _sudo=True,
)

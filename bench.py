"""Benchmark the model servers of a KITTY host against the operations manual's expected figures.

pyinfra inventory.py bench.py [--data bench_restart=true]

Prints one table and writes reports/bench-<host>.json and .csv (kitty_bench.report_dir) on the controller.
Changes nothing on the host; with bench_restart=true each enabled server is restarted through its
supervisor, one at a time and each waited for, to time start to healthy (cold, then warm).
"""

from pyinfra import host

from tasks.host import entry
from tasks.runbook import bench

# What this host runs, as deploy.py sees it: a server placed on another host is not enabled here.
cfg, plat = entry.begin()

if "inference" in host.groups:
    bench.run(cfg, plat)

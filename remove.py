"""Take a host out of KITTY: undo what kitty-ops installed on it, keep its models and the app's data.

pyinfra inventory.py remove.py                                # models and application data kept
pyinfra inventory.py remove.py --data remove_models=true      # the files of kitty_models too
pyinfra inventory.py remove.py --data remove_app_data=true    # the stack's volumes, kitty_root, logs_dir too
pyinfra inventory.py remove.py --dry                          # the plan, nothing changed

Only what kitty-ops installed, found by its own labels, units, records and paths: a llama-server
or a container it did not start lives on. A second run changes nothing; deploy.py afterwards
rebuilds the host. What it kept, and where, is printed at the end.
"""

from pyinfra import host

from tasks.host import entry
from tasks.runbook import remove

# Bad host data, a bad --data value, or a removal that would take too much fails here.
cfg, plat = entry.begin()
asked = remove.options(cfg, host.data)

# The application stack's containers and network, by compose's project label; volumes only when asked.
remove.application_stack(cfg, plat, asked)

# Every supervised program kitty-ops runs here (images service, model servers, RPC worker,
# colima), stopped and its plist/unit and record removed, as a disabled one is.
remove.supervised_programs(cfg, plat)

# macOS: the wired-limit boot job, and the limit back to macOS's default.
if plat.is_mac:
    remove.wired_limit(cfg, plat)

# newsyslog / logrotate entries of the KITTY logs.
remove.log_rotation(cfg, plat)

# The nftables table / pf anchor, its file and its boot job: once no server listens.
remove.firewall_rules(cfg, plat)

# opt_dir: llama.cpp's source and builds, the keys, the supervisor's records, the hf CLI, the scripts.
remove.builds_keys_records(cfg, plat)

# The service account, when kitty-ops made it.
remove.account(cfg, plat)

# Kept unless asked: the model files, and the application's data.
remove.models(cfg, plat, asked)
remove.application_data(cfg, plat, asked)

# What was kept, and where.
remove.report(cfg, plat)

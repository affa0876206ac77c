"""What differs on the sandbox host (Debian in a container) from the Mac of the manual.

Loaded after group_data/ with `--group-data sandbox/group_data`: each name here
replaces the default of the same name whole.
"""

kitty_paths = {
    "kitty_root": "/srv/kitty/KITT",
    "models_dir": "/srv/kitty/models",
    "logs_dir": "/srv/kitty/KITT/.logs",
    "opt_dir": "/opt/kitty",
    "service_user": None,
}

"""The machine under KITTY: macOS settings and the wired-memory limit, prerequisites, the
service account, log rotation, the memory budget, the firewall.
"""

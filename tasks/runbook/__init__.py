"""The manual's chapters other than startup: verify (health), diagnose, bench, shutdown and
emergency stop, backup, restore (with restic).
"""

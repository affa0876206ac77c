"""The pyinfra plumbing every wing stands on: the fact cache and the fact shell (one SSH
session for every fact read), our operations, files written to a host with their state, the
templates folder and its one jinja environment. Imports nothing else of tasks.
"""

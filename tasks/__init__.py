"""The steps of a KITTY converge, one concern per module (see deploy.py)."""

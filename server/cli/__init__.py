"""The `ganpaint` command (main.py) and its sub-commands, thin over ganpaint.core."""

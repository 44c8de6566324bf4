"""Scout: runs Claude Code agent tasks in the background and lets people and programs follow them."""

__version__ = "0.1.0"

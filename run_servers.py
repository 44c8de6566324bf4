#!/usr/bin/env python3
"""Start Scout's API server (port 8000) and web UI (port 7860); Ctrl-C stops both.

    python run_servers.py --help
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scout.launcher import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

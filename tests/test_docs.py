"""The README stays true to the code: every setting Scout reads is documented there."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_scout_setting_is_in_the_readme():
    sources = [*ROOT.joinpath("scout").glob("*.py"), ROOT / "run_servers.py"]
    names = {name for path in sources for name in re.findall(r'"(SCOUT_[A-Z_]+)"', path.read_text())}
    assert "SCOUT_SSE_KEEPALIVE" in names and len(names) > 20  # the scan finds what it should
    readme = ROOT.joinpath("README.md").read_text()
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert missing == [], f"settings read by the code but not in README.md: {missing}"

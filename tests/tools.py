"""Outside tools that some tests run (promtool, systemd-analyze, chromium).

Without the tool the test is skipped with the apt package to install, except under CI
(``CI`` set), where it fails: ``.ci/run`` installs every one of them.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """The tool's path; else skip (locally) or fail (under CI) naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} not found on PATH (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: {why}")
        pytest.skip(why)
    return path

"""Portability: what the virtual-camera lines tell Windows and macOS users to install.

pyvirtualcam's README: Windows needs OBS 26.0+; macOS needs OBS 28+ since pyvirtualcam 0.10 and,
on macOS 13 and later, OBS 30+ since 0.14 (pyproject allows any pyvirtualcam >= 0.11).
The OS is stood in for by patching what the code asks (platform.system / sys.platform).
"""

from __future__ import annotations

import platform
import sys

import pytest
from dreamcam.cli import devices
from dreamcam.sinks import virtualcam as sinks


@pytest.mark.parametrize(("system", "plat", "version"), [("Darwin", "darwin", "OBS Studio 30+"), ("Windows", "win32", "OBS Studio 26+")])
def test_run_and_devices_name_the_obs_version_pyvirtualcam_needs(monkeypatch, system, plat, version):
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(sys, "platform", plat)
    assert version in sinks.install_hint()
    report = {"cameras": [], "screen": {"display": None, "monitors": [], "error": None},
              "virtualcam": [{"name": "obs", "usable": False, "device": None, "error": "not found", "hint": None}]}
    assert f"to get one: {sinks.install_hint()}" in devices.format_report(report)


def test_macos_hint_keeps_the_older_obs_for_older_macos(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert "28+ on macOS 12 and older" in sinks.install_hint()

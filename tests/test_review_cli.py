"""Regression tests from the review of the day's CLI changes (Source.check, SIGTERM during the load).

The CLI runs in-process (`cli.main`) on this machine's real absence of cameras: no /dev/video97
exists here (the test skips where one does).
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from dreamcam.cli import main as cli

BASE = ["run", "--model", "tiny", "--width", "64", "--height", "64", "--sink", "null", "--frames", "1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="camera numbers map to /dev/videoN on Linux only")
@pytest.mark.skipif(os.path.exists("/dev/video97"), reason="this machine has a /dev/video97")
def test_a_camera_number_with_no_device_node_is_said_before_the_model_loads(capsys):
    # `--source webcam` (README's first command) on a machine without that camera loaded the
    # model and warmed up (minutes with a real model) before saying that camera 0 did not open
    code = cli.main([*BASE, "--no-osc", "--source", "webcam:97"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dreamcam: error:")]
    assert code == 2 and len(errors) == 1 and "camera 97 did not open" in errors[0], err
    assert "loading model" not in err, err


def test_the_signal_handlers_of_a_run_do_not_outlive_it(capsys):
    # cmd_run makes SIGTERM raise KeyboardInterrupt during the load, then SIGINT/SIGTERM stop its
    # runner; in-process (embedded use, these tests) both stayed installed after main returned:
    # SIGTERM raised KeyboardInterrupt anywhere later, and Ctrl-C only "stopped" a finished runner
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # fails after the SIGTERM handler is in place: the OSC address is one this machine lacks
    assert cli.main([*BASE, "--source", "testpattern", "--osc-host", "192.0.2.77", "--osc-port", "19390"]) == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert cli.main([*BASE, "--source", "testpattern", "--no-osc"]) == 0  # a whole run: the runner's handlers
    assert {sig: signal.getsignal(sig) for sig in before} == before
    capsys.readouterr()

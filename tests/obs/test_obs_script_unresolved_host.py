"""A real headless OBS with the dreamcam script pointed at a host name that does not resolve:
the failure is logged under the script's name (not `[Unknown Script]`, which is what OBS prints
for a log call from a thread outside the script's callbacks), and the status says the look-up
failed instead of `looking up ...` for ever."""

from __future__ import annotations

import re
from pathlib import Path

from obs_harness import OBS_MARKS, ObsStudio

pytestmark = OBS_MARKS

SCRIPT = Path(__file__).resolve().parents[2] / "obs_scripts" / "dreamcam_obs.py"
HOST = "dreamcam-no-such-host.invalid"  # .invalid never resolves (RFC 6761)


def test_an_unresolvable_host_is_logged_by_the_script_and_the_status_says_so():
    with ObsStudio(scripts=[(SCRIPT, {"host": HOST, "port": 9000})]) as studio:
        studio.wait_for_log(rf"\[Python: dreamcam_obs\.py\] status: cannot resolve dreamcam host '{re.escape(HOST)}'",
                            timeout_s=15)
        studio.wait_for_log(rf"\[Python: dreamcam_obs\.py\] cannot resolve dreamcam host '{re.escape(HOST)}'", timeout_s=5)
        log = studio.log_text()
    assert "Unknown Script" not in log
    assert "Traceback" not in log
    # the last status the script logged is the failure, not the look-up that ended with it
    statuses = re.findall(r"\[Python: dreamcam_obs\.py\] status: (.*)", log)
    assert statuses and statuses[-1].startswith("cannot resolve"), statuses

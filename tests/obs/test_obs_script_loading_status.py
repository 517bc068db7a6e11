"""A real headless OBS with the dreamcam script, against dreamcam's own OSC server answering as
`dreamcam run` does: {"loading": true} while the model loads (the status says `loading model`,
never `connected: ? fps`), and a new instance id when dreamcam was restarted with no gap the
script could notice (it sends the values set in OBS again, and only those)."""

from __future__ import annotations

import time
from pathlib import Path

from obs_harness import OBS_MARKS, ObsStudio
from waiting import wait_until

from dreamcam.control.osc.server import OscServer
from dreamcam.knobs import PARAMS, ParamStore

pytestmark = OBS_MARKS

SCRIPT = Path(__file__).resolve().parents[2] / "obs_scripts" / "dreamcam_obs.py"
OBS_VALUES = {"prompt": "a fox, ink drawing", "strength": 0.55}
# dreamcam's start-up flags for knobs the user never touched in OBS: they must stay as they are
RUN_FLAGS = {"guidance": 3.0, "seed": 77, "bypass": True}


def has_obs_values(store: ParamStore) -> bool:
    return store.get("prompt") == OBS_VALUES["prompt"] and abs(store.get("strength") - OBS_VALUES["strength"]) < 1e-6


def test_loading_model_is_shown_and_a_new_instance_gets_the_obs_values_again():
    store = ParamStore(RUN_FLAGS)
    status = {"loading": True, "instance": "first"}
    with OscServer(store, port=0, status=lambda: dict(status)) as server, \
            ObsStudio(scripts=[(SCRIPT, dict(OBS_VALUES, port=server.port))]) as studio:
        studio.wait_for_log(r"\[Python: dreamcam_obs\.py\] status: loading model")
        wait_until(lambda: has_obs_values(store), timeout_s=20, what="OBS's values while the model loads")
        status.update(fps=24.8, latency_ms=41.0, loading=False)
        studio.wait_for_log(r"status: connected: 24\.8 fps, 41 ms")
        assert "connected: ?" not in studio.log_text()
        assert {k: store.get(k) for k in RUN_FLAGS} == RUN_FLAGS

        # dreamcam restarted at once: its defaults and flags again, a new instance, no silence between
        store.update({name: p.default for name, p in PARAMS.items() if name != "preset"} | RUN_FLAGS)
        assert not has_obs_values(store)
        status["instance"] = "second"
        wait_until(lambda: has_obs_values(store), timeout_s=20, what="OBS's values sent to the new instance")
        time.sleep(1.5)  # three more polls: nothing else may arrive
        assert {k: store.get(k) for k in RUN_FLAGS} == RUN_FLAGS
        assert "Traceback" not in studio.log_text()
    assert sum(server.rejected.values()) == 0, dict(server.rejected)

"""Adding a live knob is one entry in the knob table plus the code that uses it.

A knob `grain` that no code knows by name is added to `dreamcam.knobs.PARAMS` (monkeypatched,
so the table is back as it was after each test) and is then found everywhere the table reaches:
the `dreamcam run` parser, OSC dispatch on a real UDP socket and the /dreamcam/status reply,
the /dreamcam/knobs reply, a presets file, the JSON the OBS script reads, and the controller,
which calls the engine setter the entry names, after the backend's fence.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from dreamcam import StreamEngine
from dreamcam.cli.knobs import table_json
from dreamcam.cli.main import build_parser
from dreamcam.control.controller import Controller
from dreamcam.control.osc.server import OscServer
from dreamcam.control.presets import PresetLibrary
from dreamcam.errors import ConfigError
from dreamcam.knobs import PARAMS, Apply, Param, ParamStore
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "obs_scripts"))

import dreamcam_link  # noqa: E402  (the OBS script's logic; OBS's Python cannot import dreamcam)

GRAIN = Param("grain", float, 0.0, "film grain over the output", 0.0, 1.0,
              label="Film grain", step=0.01, apply=Apply.FENCE, setter="set_grain")


@pytest.fixture
def grain(monkeypatch):
    monkeypatch.setitem(PARAMS, GRAIN.name, GRAIN)
    return GRAIN


def osc(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.fixture
def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5.0)
    yield s
    s.close()


def ask(client: socket.socket, port: int, query: str) -> tuple[str, object]:
    """Send a query to the server and return (reply address, its JSON argument decoded)."""
    client.sendto(osc(query), ("127.0.0.1", port))
    reply = OscMessage(client.recvfrom(65535)[0])
    return reply.address, json.loads(reply.params[0])


def test_a_new_knob_is_a_dreamcam_run_flag_with_its_range_and_default(grain, capsys):
    parser = build_parser("run")
    assert parser.parse_args(["run", "--grain", "0.3"]).grain == 0.3
    assert parser.parse_args(["run"]).grain is None  # not given: the table's default stays in the store
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--help"])
    run_help = " ".join(capsys.readouterr().out.split())
    assert "--grain GRAIN film grain over the output (0..1; default 0.0)" in run_help


def test_a_new_knob_is_set_over_udp_shows_in_status_and_is_checked_against_its_range(grain, client):
    store = ParamStore()
    with OscServer(store, port=0) as server:
        client.sendto(osc("/dreamcam/grain", 0.25), ("127.0.0.1", server.port))
        address, state = ask(client, server.port, "/dreamcam/status")
        assert address == "/dreamcam/state" and state["grain"] == pytest.approx(0.25)
        client.sendto(osc("/dreamcam/grain", 1.5), ("127.0.0.1", server.port))  # outside 0..1: rejected
        _, state = ask(client, server.port, "/dreamcam/status")
        assert state["grain"] == pytest.approx(0.25) and state["rejected"]["out_of_range"] == 1
        address, knobs = ask(client, server.port, "/dreamcam/knobs")
        assert address == "/dreamcam/knobs"
        (entry,) = [k for k in knobs if k["name"] == "grain"]
        assert entry["osc"] == "/dreamcam/grain" and entry["flag"] == "--grain"
        assert (entry["min"], entry["max"], entry["default"]) == (0.0, 1.0, 0.0)


def test_a_new_knob_can_be_in_a_presets_file(grain, tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[grainy]\nprompt = "old film"\ngrain = 0.5\n\n[too_much]\ngrain = 2.0\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 6: preset 'too_much': grain must be between 0 and 1"):
        PresetLibrary(path)
    path.write_text('[grainy]\nprompt = "old film"\ngrain = 0.5\n', encoding="utf-8")
    store = ParamStore()
    PresetLibrary(path).apply("grainy", store)
    assert store.get("grain") == 0.5 and store.get("preset") == "grainy"


def test_a_new_knob_reaches_the_obs_script_data(grain):
    """`dreamcam knobs --json` writes what the OBS script reads; the script's loader finds the
    knob with its range, default, label and slider step."""
    params = dreamcam_link.params_from_knobs(json.loads(table_json()))
    (p,) = [p for p in params if p.name == "grain"]
    assert (p.kind, p.default, p.lo, p.hi, p.label, p.step) == ("float", 0.0, 0.0, 1.0, "Film grain", 0.01)
    assert params[0].name == "preset"  # sent first, so the values sent with it win


def test_the_controller_calls_the_setter_the_new_knob_names_after_the_fence(grain, tiny_pipe):
    engine = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none")
    engine.prepare("a cat")
    calls = []
    engine.set_grain = lambda value: calls.append(("set_grain", value))
    store = ParamStore({"slew": 0.0})  # slew 0: the setter gets the value at once, not a glide
    with Controller(engine, store) as ctrl:
        store.set("grain", 0.4)
        ctrl.apply(lambda: calls.append(("fence", None)))
        assert calls == [("fence", None), ("set_grain", 0.4)]


def test_a_knob_whose_setter_the_engine_lacks_is_said_when_the_controller_starts(monkeypatch, tiny_pipe):
    monkeypatch.setitem(PARAMS, "grain", Param("grain", float, 0.0, "film grain", 0.0, 1.0,
                                               apply=Apply.FENCE, setter="set_grain"))
    engine = StreamEngine(tiny_pipe, [35], 64, 64, cfg_type="none")
    engine.prepare("a cat")
    with pytest.raises(TypeError, match=r"knob 'grain' is applied by engine.set_grain\(\), which StreamEngine lacks"):
        Controller(engine, ParamStore())

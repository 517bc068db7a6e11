"""The OBS script's OSC encoding and decoding, checked against python-osc's own parser.

Both code paths are tested: python-osc importable, and not (import blocked, as in OBS's
embedded Python); plus a run under /usr/bin/python3, the interpreter OBS embeds on Linux.
"""

from __future__ import annotations

import importlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

SCRIPTS = Path(__file__).resolve().parents[2] / "obs_scripts"
UNICODE_PROMPT = "ネオンの街、café at night 🌃 — ünïcödé"
SAMPLES = {
    "preset": "storm",
    "prompt": UNICODE_PROMPT,
    "negative_prompt": "blurry, 低品質",
    "strength": 0.73,
    "guidance": 2.5,
    "delta": 0.8,
    "seed": 2**31 - 1,
    "transition": 1.5,
    "bypass": True,
}


def _fresh_modules(block_pythonosc: bool):
    """Import dreamcam_osc and dreamcam_link anew, with python-osc importable or blocked."""
    for name in ("dreamcam_osc", "dreamcam_link"):
        sys.modules.pop(name, None)
    if block_pythonosc:
        for name in [n for n in sys.modules if n == "pythonosc" or n.startswith("pythonosc.")]:
            sys.modules[name] = None  # makes `import pythonosc...` raise ImportError
        sys.modules["pythonosc"] = None
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("dreamcam_osc"), importlib.import_module("dreamcam_link")


@pytest.fixture(params=["pythonosc", "stdlib"])
def mods(request):
    saved = dict(sys.modules)
    osc, link = _fresh_modules(block_pythonosc=request.param == "stdlib")
    assert osc.USE_PYTHONOSC is (request.param == "pythonosc")
    yield osc, link
    for name in ("dreamcam_osc", "dreamcam_link", "pythonosc"):
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def _state_message(text: str) -> OscMessage:
    builder = OscMessageBuilder(address="/dreamcam/state")
    builder.add_arg(text)
    return builder.build()


def _check_decoded(msg: OscMessage, name: str, value) -> None:
    assert msg.address == f"/dreamcam/{name}"
    (got,) = msg.params
    if isinstance(value, bool):
        assert type(got) is int and got == int(value)
    elif isinstance(value, float):
        assert type(got) is float and got == pytest.approx(value, rel=1e-6)  # float32
    else:
        assert type(got) is type(value) and got == value


def test_each_parameter_is_encoded_as_python_osc_parses_it(mods):
    _, link = mods
    for name, value in SAMPLES.items():
        dgram = link.encode_param(name, link.coerce(name, value))
        assert len(dgram) % 4 == 0
        _check_decoded(OscMessage(dgram), name, value)


def test_stdlib_and_python_osc_encoders_give_identical_bytes(mods):
    osc, _ = mods
    cases = [("/dreamcam/status", [], "")] + [("/a", ["x" * n], "s") for n in range(9)]
    cases += [("/dreamcam/prompt", [UNICODE_PROMPT], "s"),
              ("/m", [-(2**31), 2**31 - 1, 0.1, "é", b"\x01\x02\x03"], "iifsb")]
    for address, args, tags in cases:
        expected = OscMessageBuilder(address=address)
        for tag, value in zip(tags, args):
            expected.add_arg(value, tag)
        assert osc.encode_message_stdlib(address, args, tags) == expected.build().dgram
        assert osc.encode_message(address, args, tags) == expected.build().dgram


def test_string_padding_and_int_range(mods):
    osc, _ = mods
    # "abc" + NUL is exactly 4 bytes: no extra padding; "abcd" + NUL pads to 8.
    assert osc.encode_message_stdlib("/a", ["abc"]) == b"/a\x00\x00,s\x00\x00abc\x00"
    assert osc.encode_message_stdlib("/a", ["abcd"]) == b"/a\x00\x00,s\x00\x00abcd\x00\x00\x00\x00"
    with pytest.raises(ValueError, match="int32"):
        osc.encode_message("/a", [2**31], "i")
    with pytest.raises(ValueError, match="start"):
        osc.encode_message("a", [1])


def test_state_reply_built_by_python_osc_is_decoded(mods):
    osc, link = mods
    state = {"prompt": UNICODE_PROMPT, "strength": 0.5, "presets": ["calm", "storm"], "fps": 24.83,
             "latency_ms": 41.2, "dropped": 3, "bypass": False}
    dgram = _state_message(json.dumps(state)).dgram
    ((address, args),) = osc.decode_packet(dgram)
    assert address == "/dreamcam/state"
    assert link.parse_state(args) == state
    # A bundle holding the reply and another message, as a server may send it.
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(_state_message(json.dumps(state)))
    other = OscMessageBuilder(address="/x")
    other.add_arg(7)
    other.add_arg(1.5)
    bundle.add_content(other.build())
    decoded = osc.decode_packet(bundle.build().dgram)
    assert [a for a, _ in decoded] == ["/dreamcam/state", "/x"]
    assert link.parse_state(decoded[0][1])["presets"] == ["calm", "storm"]
    assert decoded[1][1] == [7, 1.5]


def test_malformed_datagrams_raise_value_error_only(mods):
    osc, link = mods
    rng = random.Random(4)
    good = _state_message('{"fps": 1}').dgram
    for _ in range(3000):
        kind = rng.randrange(3)
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 1:
            data = good[: rng.randrange(1, len(good))]
        else:
            data = bytearray(good)
            data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        try:
            for _, args in osc.decode_packet(data):
                link.parse_state(args)
        except ValueError:
            pass
    with pytest.raises(ValueError):
        osc.decode_packet_stdlib(b"/dreamcam/state\x00,s\x00\x00abc")  # string without NUL
    with pytest.raises(ValueError):
        osc.decode_packet_stdlib(b"/a\x00\x00,q\x00\x00")  # unknown type tag
    with pytest.raises(ValueError, match="JSON string"):
        link.parse_state([1])


def test_obs_python_encodes_with_the_standard_library_alone():
    """/usr/bin/python3 is the Python OBS embeds on Debian; it has no python-osc."""
    system_python = Path("/usr/bin/python3")
    if not system_python.exists():
        pytest.skip("no /usr/bin/python3 (the Python OBS embeds on Linux)")
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import dreamcam_link as l, dreamcam_osc as o;"
        "v = json.loads(sys.argv[2]);"
        "print(json.dumps({'pythonosc': o.USE_PYTHONOSC, 'dgrams': {n: l.encode_param(n, l.coerce(n, x)).hex()"
        " for n, x in v.items()}}))"
    )
    out = subprocess.run([str(system_python), "-I", "-c", code, str(SCRIPTS), json.dumps(SAMPLES)],
                         capture_output=True, text=True, timeout=30, check=True)
    result = json.loads(out.stdout)
    for name, value in SAMPLES.items():
        _check_decoded(OscMessage(bytes.fromhex(result["dgrams"][name])), name, value)

"""Presets file: format, validation with line numbers, atomic apply, hot reload, broken edits."""

from __future__ import annotations

import logging
import os
import time

import pytest
from dreamcam.errors import ConfigError
from dreamcam.knobs import ParamStore
from dreamcam.control.presets import PresetLibrary, parse_presets

GOOD = """\
[watercolor]
prompt = "a portrait in the style of a watercolor painting"
strength = 0.45
transition = 1.5

["neon city"]
prompt = "a neon city at night:0.7 | rain:0.3"
negative_prompt = "blurry"
guidance = 2
delta = 0.8
seed = 7
"""


def write(path, text):
    path.write_text(text, encoding="utf-8")
    st = path.stat()  # make sure the change is visible even on coarse mtime file systems
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def lib(tmp_path):
    path = tmp_path / "presets.toml"
    write(path, GOOD)
    return PresetLibrary(path, min_interval=0.0, settle=0.0)


def test_names_get_and_types(lib):
    assert lib.names() == ["watercolor", "neon city"]
    assert lib.get("neon city") == {
        "prompt": "a neon city at night:0.7 | rain:0.3",
        "negative_prompt": "blurry",
        "guidance": 2.0,
        "delta": 0.8,
        "seed": 7,
    }
    assert isinstance(lib.get("neon city")["guidance"], float)
    with pytest.raises(ConfigError, match="no preset named 'nope'.*watercolor, neon city"):
        lib.get("nope")


def test_apply_is_one_atomic_update(lib):
    store = ParamStore()
    seen = []
    store.subscribe(lambda name, value: seen.append((name, store.snapshot()["preset"])))
    changed = lib.apply("watercolor", store)
    assert changed["strength"] == 0.45 and changed["preset"] == "watercolor"
    assert all(preset == "watercolor" for _, preset in seen)  # listeners only ever saw the whole preset
    assert store.take_changes() == changed
    assert store.get("seed") == 2  # keys a preset leaves out keep their value


@pytest.mark.parametrize(
    "text, match",
    [
        ('[a]\nprompt = "x"\n[b]\nstrength = 1.5\n', r"line 4: preset 'b': strength must be between 0 and 1"),
        ('[a]\nstrength = "high"\n', r"line 2: preset 'a': strength must be a number"),
        ('[a]\nmodel = "x"\n', r"unknown key 'model'"),
        ('[a]\nprompt = "x"\nprompt = "y"\n', r"line 3, column"),
        ('[a\nprompt = "x"\n', r"line 1, column"),
        ('prompt = "x"\n', r"expected a table"),
        (f'[a]\nprompt = "{"x" * 5000}"\n', r"at most 4096"),
        ('[a]\nprompt = "x:0 | y:0"\n', r"not all 0"),
        ("[a]\nseed = 1.5\n", r"whole number"),
    ],
)
def test_bad_files_name_the_line(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_presets(text, "p.toml")


@pytest.mark.parametrize(
    "text, line",
    [
        ('[watercolor]\nprompt = "x"\nstrength = 0.45\n\n[ink]\nprompt = "ink"\n\nstrength = 7\n', 8),
        ('[ink]\nprompt = "ink"\nstrenght = 0.2\n', 3),
        ('["neon city"]\nseed = 7\n"guidance" = 99\n', 3),
    ],
)
def test_a_broken_preset_names_the_line_that_is_wrong(text, line):
    # README: "a broken edit keeps the last good presets and names the line that is wrong": the
    # line of the wrong key, not the preset's [header] line
    with pytest.raises(ConfigError, match=rf"^p.toml: line {line}: "):
        parse_presets(text, "p.toml")


def test_missing_or_broken_file_at_start_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read presets file .*missing.toml"):
        PresetLibrary(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[a]\nstrength = 2\n")
    with pytest.raises(ConfigError, match=r"bad.toml: line 2: preset 'a'"):
        PresetLibrary(bad)


def test_reload_on_change_and_broken_edit_keeps_last_good(lib, caplog):
    assert not lib.maybe_reload()
    write(lib.path, GOOD + '\n[sketch]\nprompt = "a pencil sketch"\n')
    assert lib.maybe_reload()
    assert lib.names() == ["watercolor", "neon city", "sketch"]
    with caplog.at_level(logging.WARNING, logger="dreamcam.control.presets"):
        write(lib.path, GOOD + '\n[sketch]\nprompt = "unterminated\n')
        assert not lib.maybe_reload()
        assert not lib.maybe_reload()  # the same broken version is reported once
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        str(lib.path) in warnings[0]
        and "line 14, column 23" in warnings[0]
        and "keeping the last good presets" in warnings[0]
    )
    assert lib.names() == ["watercolor", "neon city", "sketch"] and lib.errors == 1
    write(lib.path, GOOD)
    assert lib.maybe_reload() and lib.names() == ["watercolor", "neon city"]


def test_deleted_file_keeps_presets(lib, caplog):
    lib.path.unlink()
    with caplog.at_level(logging.WARNING, logger="dreamcam.control.presets"):
        assert not lib.maybe_reload()
        assert not lib.maybe_reload()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert lib.names() == ["watercolor", "neon city"]


def test_reload_checks_are_throttled(tmp_path):
    path = tmp_path / "p.toml"
    write(path, GOOD)
    lib = PresetLibrary(path, min_interval=60.0)
    write(path, "[only]\nseed = 1\n")
    lib._last_check = time.monotonic()
    assert not lib.maybe_reload()  # within the interval: no disk access
    assert lib.maybe_reload(force=True) and lib.names() == ["only"]


def test_a_file_still_being_written_is_read_once_it_has_settled(tmp_path):
    # an editor saving in several writes: the first part alone is valid TOML with a wrong value
    path = tmp_path / "p.toml"
    write(path, GOOD)
    lib = PresetLibrary(path, min_interval=0.0, settle=0.3)
    write(path, "[watercolor]\nstrength = 0.4")  # the first write of "strength = 0.45"
    assert not lib.maybe_reload()  # changed just now: not read yet
    with path.open("a", encoding="utf-8") as f:
        f.write("5\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert not lib.maybe_reload()  # changed again: the wait starts over
    assert lib.names() == ["watercolor", "neon city"] and lib.reloads == 0  # the old presets still serve
    time.sleep(0.35)
    assert lib.maybe_reload() and lib.names() == ["watercolor"]
    assert lib.get("watercolor")["strength"] == 0.45 and lib.reloads == 1

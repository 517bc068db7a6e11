"""dreamcam live control for OBS Studio (Tools -> Scripts -> + -> dreamcam_obs.py).

Sends dreamcam's live knobs (prompt, strength, guidance, ..., preset, bypass: the knob table
in dreamcam_knobs.json) to a running `dreamcam run` over OSC/UDP the moment they change, polls
`/dreamcam/status` for the status line and the preset list, and registers hotkeys for
next/previous preset, next/previous cue and bypass.

Needs only the Python standard library (OBS embeds its own Python); uses python-osc when it
is importable. Keep `dreamcam_link.py`, `dreamcam_osc.py` and `dreamcam_knobs.json` (dreamcam's
knob table: which parameters there are, their ranges and labels) next to this file.

Only the knobs set in OBS are sent (a knob left at its default keeps dreamcam's value), and
they are sent again to a dreamcam that starts or restarts after the script loaded.

This file is only the OBS side: it reads settings and forwards them to `DreamcamLink`
(dreamcam_link.py), which holds all the logic and is tested outside OBS. Nothing here
blocks OBS: the socket is non-blocking and nothing sleeps.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from dreamcam_link import DEFAULT_HOST, DEFAULT_PORT, PARAMS, POLL_MS, DreamcamLink, learnable  # noqa: E402

try:
    import obspython as obs
except ImportError:  # imported outside OBS (tests, linters): the functions below need OBS
    obs = None

_link = None
_settings = None
_hotkeys = {}
_last_status_kind = None
# Log lines wait here until the next timer tick or settings update writes them: OBS names the
# script only in a log call made from one of the script's own callbacks.
_pending_log = deque()

HOTKEYS = (
    ("dreamcam.next_preset", "dreamcam: next preset"),
    ("dreamcam.previous_preset", "dreamcam: previous preset"),
    ("dreamcam.toggle_bypass", "dreamcam: toggle bypass"),
    ("dreamcam.next_cue", "dreamcam: next cue"),
    ("dreamcam.previous_cue", "dreamcam: previous cue"),
)
CUE_HOTKEYS = {"dreamcam.next_cue": "next", "dreamcam.previous_cue": "previous"}
NOT_PROPERTIES = ("cue",)  # knobs stepped with hotkeys, not edited as a property


def _obs_log(level, msg):
    """Log to OBS's log at the next `_write_log` (any thread may call this)."""
    _pending_log.append((level, msg))  # deque.append is thread-safe


def _write_log():
    """Write the waiting log lines; called only from the script's callbacks."""
    while _pending_log:
        level, msg = _pending_log.popleft()
        obs.script_log(obs.LOG_WARNING if level >= logging.WARNING else obs.LOG_INFO, msg)


def _ensure_link():
    global _link
    if _link is None:
        _link = DreamcamLink(log=_obs_log)
    return _link


def _params():
    """The knob table: the running dreamcam's once it has answered, else dreamcam_knobs.json's."""
    return _link.params if _link is not None else PARAMS


def _read_settings(settings) -> tuple:
    """(the knobs set in OBS by name, the names of those left at their defaults)."""
    values, unset = {}, []
    for p in _params():
        if p.name in NOT_PROPERTIES or not obs.obs_data_has_user_value(settings, p.name):
            unset.append(p.name)  # never set here, or reset to defaults: dreamcam's own value stays
            continue
        if p.kind == "text":
            values[p.name] = obs.obs_data_get_string(settings, p.name)
        elif p.kind == "float":
            values[p.name] = obs.obs_data_get_double(settings, p.name)
        elif p.kind == "int":
            values[p.name] = obs.obs_data_get_int(settings, p.name)
        else:
            values[p.name] = obs.obs_data_get_bool(settings, p.name)
    return values, unset


def script_description():
    return ("<b>dreamcam</b> live control over OSC.<br>Start <code>dreamcam run</code>, then set "
            "the host and port of its OSC server (default 127.0.0.1:9000).")


def script_defaults(settings):
    obs.obs_data_set_default_string(settings, "host", DEFAULT_HOST)
    obs.obs_data_set_default_int(settings, "port", DEFAULT_PORT)
    _set_defaults(settings, PARAMS)


def _set_defaults(settings, params):
    for p in params:
        setter = {"text": obs.obs_data_set_default_string, "float": obs.obs_data_set_default_double,
                  "int": obs.obs_data_set_default_int, "bool": obs.obs_data_set_default_bool}[p.kind]
        setter(settings, p.name, p.default)


def _fill_presets(prop):
    obs.obs_property_list_clear(prop)
    obs.obs_property_list_add_string(prop, "(none)", "")
    names = list(_link.presets) if _link else []
    chosen = obs.obs_data_get_string(_settings, "preset") if _settings else ""
    if chosen and chosen not in names:
        names.append(chosen)
    for name in names:
        obs.obs_property_list_add_string(prop, name, name)


def _on_refresh(props, prop):
    _fill_presets(obs.obs_properties_get(props, "preset"))
    if _link and _settings:
        obs.obs_data_set_string(_settings, "status", _link.status())
    return True  # rebuild the properties view so the list and the status line show


def script_properties():
    props = obs.obs_properties_create()
    obs.obs_properties_add_text(props, "host", "OSC host", obs.OBS_TEXT_DEFAULT)
    obs.obs_properties_add_int(props, "port", "OSC port", 1, 65535, 1)
    params = _params()
    if _settings:
        _set_defaults(_settings, params)  # dreamcam's own defaults, for knobs the file lacks
    for p in params:
        if p.name in NOT_PROPERTIES:
            continue
        if p.name == "preset":
            _fill_presets(obs.obs_properties_add_list(props, "preset", p.label, obs.OBS_COMBO_TYPE_LIST,
                                                      obs.OBS_COMBO_FORMAT_STRING))
        elif p.choices:
            choice = obs.obs_properties_add_list(props, p.name, p.label, obs.OBS_COMBO_TYPE_LIST,
                                                 obs.OBS_COMBO_FORMAT_STRING)
            for c in p.choices:
                obs.obs_property_list_add_string(choice, c, c)
        elif p.kind == "text":
            obs.obs_properties_add_text(props, p.name, p.label, obs.OBS_TEXT_MULTILINE)
        elif p.kind == "float":
            obs.obs_properties_add_float_slider(props, p.name, p.label, p.lo, p.hi, p.step)
        elif p.kind == "int":
            obs.obs_properties_add_int(props, p.name, p.label, p.lo, p.hi, p.step)
        else:
            obs.obs_properties_add_bool(props, p.name, p.label)
    info = getattr(obs, "OBS_TEXT_INFO", None)
    status = obs.obs_properties_add_text(props, "status", "Status",
                                         obs.OBS_TEXT_DEFAULT if info is None else info)
    if info is None:
        obs.obs_property_set_enabled(status, False)
    obs.obs_properties_add_button(props, "refresh", "Refresh status and presets", _on_refresh)
    learn = obs.obs_properties_add_list(props, "midi_learn", "MIDI learn: knob", obs.OBS_COMBO_TYPE_LIST,
                                        obs.OBS_COMBO_FORMAT_STRING)
    for name in learnable(params):
        obs.obs_property_list_add_string(learn, name, name)
    obs.obs_properties_add_button(props, "midi_learn_go", "MIDI learn: move a control for this knob", _on_learn)
    return props


def _on_learn(props, prop):
    """Arm dreamcam's MIDI learn (dreamcam run --midi ...) for the knob chosen in the list: the
    next control moved on the MIDI device drives it, and dreamcam writes it to its --map file."""
    name = obs.obs_data_get_string(_settings, "midi_learn") if _settings else ""
    if _link is None or not name:
        return False
    if _link.learn(name):
        _obs_log(logging.INFO, f"MIDI learn {name}: move a control on dreamcam's MIDI device")
    _write_log()
    return False


def script_update(settings):
    global _settings
    _settings = settings
    link = _ensure_link()
    try:
        link.set_target(obs.obs_data_get_string(settings, "host"), obs.obs_data_get_int(settings, "port"))
    except ValueError as e:
        _obs_log(logging.WARNING, str(e))
    else:
        values, unset = _read_settings(settings)
        link.forget(unset)
        link.update(values)
    _write_log()


def _hotkey_action(name):
    def callback(pressed):
        if not pressed or _link is None:
            return
        if name in CUE_HOTKEYS:
            sent = _link.step_cue(CUE_HOTKEYS[name])
            _obs_log(logging.INFO, f"cue {CUE_HOTKEYS[name]}" if sent else "cue not sent: dreamcam is not reachable")
            return
        if name == "dreamcam.toggle_bypass":
            value = _link.toggle_bypass()
            if _settings:
                obs.obs_data_set_bool(_settings, "bypass", value)
            _obs_log(logging.INFO, f"bypass {'on' if value else 'off'}")
            return
        preset = _link.step_preset(+1 if name == "dreamcam.next_preset" else -1)
        if preset is None:
            _obs_log(logging.INFO, "no presets known yet (dreamcam sends them in its status)")
        else:
            if _settings:
                obs.obs_data_set_string(_settings, "preset", preset)
            _obs_log(logging.INFO, f"preset {preset}")
    return callback


def script_load(settings):
    global _settings
    _settings = settings
    _ensure_link()
    for name, description in HOTKEYS:
        hotkey_id = obs.obs_hotkey_register_frontend(name, description, _hotkey_action(name))
        _hotkeys[name] = hotkey_id
        bindings = obs.obs_data_get_array(settings, name)
        obs.obs_hotkey_load(hotkey_id, bindings)
        obs.obs_data_array_release(bindings)
    obs.timer_add(_tick, POLL_MS)


def script_save(settings):
    for name, hotkey_id in _hotkeys.items():
        bindings = obs.obs_hotkey_save(hotkey_id)
        obs.obs_data_set_array(settings, name, bindings)
        obs.obs_data_array_release(bindings)


def script_unload():
    global _link
    obs.timer_remove(_tick)
    if _link is not None:
        _link.close()
        _link = None
    _write_log()


def _tick():
    global _last_status_kind
    if _link is None:
        _write_log()
        return
    line = _link.poll()
    if _settings:
        obs.obs_data_set_string(_settings, "status", line)
    kind = line.split(" ")[0].rstrip(":")
    if kind != _last_status_kind:  # log transitions, not every fps change
        _last_status_kind = kind
        _obs_log(logging.INFO, f"status: {line}")
    _write_log()

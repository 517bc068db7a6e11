#!/usr/bin/env bash
# Install OBS Studio and what the real-OBS tests need (Debian/Ubuntu, run as root).
#
# Idempotent: when every package is already installed, nothing is fetched.
# Used by CI before `pytest -m obs`; see shared/docs/obs-headless.md for why each package.
#   obs-studio obs-plugins  OBS itself, with obs-websocket 5 and the Python scripting module
#   xvfb xauth              a virtual display for OBS (xvfb-run)
#   ffmpeg                  the Media Source's decoder
#   libgl1-mesa-dri         software OpenGL for OBS's renderer
#   xdotool                 presses keys in the preview window (the preview sink's key tests)
#   jackd2                  a JACK server with its dummy driver: real rtmidi MIDI ports with no sound card
#                           (tests/control/test_midi_jack.py; ALSA MIDI needs /dev/snd, which CI lacks)
set -euo pipefail

PACKAGES=(obs-studio obs-plugins xvfb xauth ffmpeg libgl1-mesa-dri xdotool jackd2)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_obs: already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

echo "install_obs: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

command -v obs >/dev/null || { echo "install_obs: 'obs' not on PATH after install" >&2; exit 1; }
command -v xvfb-run >/dev/null || { echo "install_obs: 'xvfb-run' not on PATH after install" >&2; exit 1; }
echo "install_obs: done ($(obs --version 2>/dev/null | head -n1 || echo 'obs installed'))"

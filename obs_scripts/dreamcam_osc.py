"""OSC 1.0 messages for the dreamcam OBS script, with the Python standard library alone.

OBS embeds its own Python, often without third-party packages, so this module carries a
small, complete OSC 1.0 encoder and decoder. When python-osc is importable it is used
instead (`USE_PYTHONOSC`); both produce the same bytes.

Wire format (OSC 1.0): address string, type tag string (",sif"), then the arguments.
Strings are UTF-8, NUL-terminated and padded with NULs to a multiple of 4 bytes; int32
and float32 are big-endian; blobs are an int32 size then the bytes, padded to 4.
"""

from __future__ import annotations

import struct

try:
    from pythonosc import osc_message_builder as _osc_builder
    from pythonosc import osc_packet as _osc_packet

    USE_PYTHONOSC = True
except ImportError:
    _osc_builder = None
    _osc_packet = None
    USE_PYTHONOSC = False

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_BUNDLE_HEAD = b"#bundle\x00"


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _osc_string(text: str) -> bytes:
    return _pad4(text.encode("utf-8") + b"\x00")


def infer_tags(args) -> str:
    """OSC type tags for Python values: str -> s, bool or int -> i (bool as 0/1), float -> f."""
    tags = []
    for value in args:
        if isinstance(value, str):
            tags.append("s")
        elif isinstance(value, (bool, int)):
            tags.append("i")
        elif isinstance(value, float):
            tags.append("f")
        elif isinstance(value, (bytes, bytearray)):
            tags.append("b")
        else:
            raise TypeError(f"OSC argument must be str, int, float or bytes, got {type(value).__name__}")
    return "".join(tags)


def _check(address: str, tags: str, args) -> list:
    if not isinstance(address, str) or not address.startswith("/"):
        raise ValueError(f"OSC address must be a str starting with '/', got {address!r}")
    if len(tags) != len(args):
        raise ValueError(f"{len(args)} OSC arguments but {len(tags)} type tags ({tags!r})")
    values = []
    for tag, value in zip(tags, args):
        if tag == "i":
            value = int(value)
            if not INT32_MIN <= value <= INT32_MAX:
                raise ValueError(f"OSC int32 must be in {INT32_MIN}..{INT32_MAX}, got {value}")
        elif tag == "f":
            value = float(value)
        elif tag == "s":
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError(f"OSC string must be str without NUL, got {value!r}")
        elif tag == "b":
            value = bytes(value)
        else:
            raise ValueError(f"unsupported OSC type tag {tag!r}; expected one of 'sifb'")
        values.append(value)
    return values


def encode_message_stdlib(address: str, args=(), tags: str | None = None) -> bytes:
    """One OSC message as a datagram, built with struct alone."""
    args = list(args)
    tags = infer_tags(args) if tags is None else tags
    values = _check(address, tags, args)
    out = [_osc_string(address), _osc_string("," + tags)]
    for tag, value in zip(tags, values):
        if tag == "i":
            out.append(struct.pack(">i", value))
        elif tag == "f":
            out.append(struct.pack(">f", value))
        elif tag == "s":
            out.append(_osc_string(value))
        else:
            out.append(struct.pack(">i", len(value)) + _pad4(value))
    return b"".join(out)


def encode_message_pythonosc(address: str, args=(), tags: str | None = None) -> bytes:
    """One OSC message as a datagram, built by python-osc (raises ImportError without it)."""
    if _osc_builder is None:
        raise ImportError("python-osc is not importable here")
    args = list(args)
    tags = infer_tags(args) if tags is None else tags
    values = _check(address, tags, args)
    builder = _osc_builder.OscMessageBuilder(address=address)
    for tag, value in zip(tags, values):
        builder.add_arg(value, tag)
    return builder.build().dgram


def encode_message(address: str, args=(), tags: str | None = None) -> bytes:
    """Encode address + args (types from `tags`, else inferred) with python-osc when present."""
    if USE_PYTHONOSC:
        return encode_message_pythonosc(address, args, tags)
    return encode_message_stdlib(address, args, tags)


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise ValueError(f"OSC string at byte {pos} has no NUL terminator")
    text = data[pos:end].decode("utf-8")
    return text, end + 1 + (-(end + 1 - pos) % 4)


def _need(data: bytes, pos: int, size: int, what: str) -> None:
    if pos + size > len(data):
        raise ValueError(f"OSC {what} at byte {pos} needs {size} bytes, datagram has {len(data) - pos}")


def decode_message_stdlib(data: bytes) -> tuple[str, list]:
    """Decode one OSC message (not a bundle): (address, args). Raises ValueError when malformed."""
    address, pos = _read_string(data, 0)
    if not address.startswith("/"):
        raise ValueError(f"OSC address must start with '/', got {address!r}")
    if pos >= len(data):
        return address, []  # OSC 1.0 allows a message without a type tag string
    tags, pos = _read_string(data, pos)
    if not tags.startswith(","):
        raise ValueError(f"OSC type tag string must start with ',', got {tags!r}")
    args: list = []
    fixed = {"i": (">i", 4), "f": (">f", 4), "h": (">q", 8), "d": (">d", 8), "t": (">Q", 8), "r": (">I", 4)}
    for tag in tags[1:]:
        if tag in fixed:
            fmt, size = fixed[tag]
            _need(data, pos, size, tag)
            args.append(struct.unpack_from(fmt, data, pos)[0])
            pos += size
        elif tag in "sS":
            value, pos = _read_string(data, pos)
            args.append(value)
        elif tag == "b":
            _need(data, pos, 4, "blob size")
            size = struct.unpack_from(">i", data, pos)[0]
            _need(data, pos + 4, size, "blob")
            args.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size + (-size % 4)
        elif tag == "c":
            _need(data, pos, 4, "char")
            args.append(chr(struct.unpack_from(">I", data, pos)[0]))
            pos += 4
        elif tag in "TFNI":
            args.append({"T": True, "F": False, "N": None, "I": float("inf")}[tag])
        else:
            raise ValueError(f"unsupported OSC type tag {tag!r} in {tags!r}")
    return address, args


def decode_packet_stdlib(data: bytes) -> list[tuple[str, list]]:
    """All messages in a datagram (a message or a bundle, nested bundles flattened)."""
    if not data.startswith(_BUNDLE_HEAD):
        return [decode_message_stdlib(data)]
    _need(data, 0, 16, "bundle header")
    messages, pos = [], 16
    while pos < len(data):
        _need(data, pos, 4, "bundle element size")
        size = struct.unpack_from(">i", data, pos)[0]
        if size <= 0 or size % 4:
            raise ValueError(f"OSC bundle element size must be a positive multiple of 4, got {size}")
        _need(data, pos + 4, size, "bundle element")
        messages.extend(decode_packet_stdlib(data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return messages


def decode_packet(data: bytes) -> list[tuple[str, list]]:
    """Messages in a datagram as (address, args); python-osc's parser when present.

    Raises ValueError for a malformed datagram either way.
    """
    if not USE_PYTHONOSC:
        return decode_packet_stdlib(data)
    try:
        packet = _osc_packet.OscPacket(data)
    except (_osc_packet.ParseError, ValueError, IndexError, struct.error) as e:
        raise ValueError(f"malformed OSC datagram: {e}") from e
    return [(m.message.address, list(m.message.params)) for m in packet.messages]

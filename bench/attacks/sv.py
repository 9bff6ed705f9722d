"""Runs one of Debian's sipvicious tools the way bench/attacks/compare needs it.

Usage: python3 sv.py TOOL SOURCE USER_AGENT TRACE ARGS...

- binds the tool's socket to SOURCE (svwar and svcrack do not pass `-b` on);
- unless USER_AGENT is `-`, replaces the `friendly-scanner` user agent that sipvicious
  always sends by USER_AGENT;
- caps every socket timeout of the tool at 3 s (svcrack waits 10 s for its first
  answer; only the time spent waiting on a silent front changes);
- records every datagram the tool sends and receives (time, first line, Call-ID, CSeq,
  whether it carries credentials, the Server or User-Agent of answers) and writes them
  as JSON to TRACE when the tool exits.

Everything else is the tool's own code, run unchanged.
"""

import atexit
import importlib
import json
import signal
import socket
import sys
import time

SIPVICIOUS = "/usr/share/sipvicious"
MAX_WAIT_S = 3.0

tool, source, agent, trace_path = sys.argv[1:5]
sys.path.insert(0, SIPVICIOUS)
from sipvicious.libs import svhelper  # noqa: E402

started = time.monotonic()
trace = []


def summary(data):
    """The parts of a SIP message the comparison reads."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", "replace")
    head = data.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    short = {"i": "call-id", "f": "from"}
    for letter, name in short.items():
        if letter in fields and name not in fields:
            fields[name] = fields[letter]
    return {
        "first": lines[0],
        "call_id": fields.get("call-id", ""),
        "cseq": fields.get("cseq", ""),
        "credentials": "authorization" in fields or "proxy-authorization" in fields,
        "agent": fields.get("server") or fields.get("user-agent") or "",
    }


class TracedSocket(socket.socket):
    """A socket that records what goes through it."""

    def sendto(self, data, *args):
        sent = super().sendto(data, *args)
        trace.append({"dir": "out", "t": time.monotonic() - started, **summary(data)})
        return sent

    def recvfrom(self, *args):
        data, address = super().recvfrom(*args)
        trace.append({"dir": "in", "t": time.monotonic() - started, **summary(data)})
        return data, address

    def settimeout(self, value):
        if value is not None:
            value = min(value, MAX_WAIT_S)
        super().settimeout(value)


def write_trace():
    with open(trace_path, "w", encoding="utf-8") as out:
        json.dump(trace, out)


def set_default(function, name, value):
    code = function.__code__
    names = code.co_varnames[: code.co_argcount]
    defaults = list(function.__defaults__)
    defaults[names.index(name) - (len(names) - len(defaults))] = value
    function.__defaults__ = tuple(defaults)


socket.socket = TracedSocket
atexit.register(write_trace)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
if agent != "-":
    set_default(svhelper.makeRequest, "useragent", agent)
module = importlib.import_module("sipvicious." + tool)
for value in list(vars(module).values()):
    init = getattr(value, "__init__", None)
    names = getattr(getattr(init, "__code__", None), "co_varnames", ())
    if isinstance(value, type) and "bindingip" in names:
        set_default(init, "bindingip", source)
sys.argv = [tool] + sys.argv[5:]
module.main()

"""Listening TCP sockets of given processes, read from /proc (Linux), without psutil."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


def _address(text: str) -> tuple[str, int]:
    """'0100007F:1F90' (little-endian words, as /proc/net/tcp has it) -> ('127.0.0.1', 8080)."""
    hexip, hexport = text.split(":")
    raw = b"".join(bytes.fromhex(hexip[i : i + 8])[::-1] for i in range(0, len(hexip), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(hexport, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    found: dict[int, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[9])] = _address(fields[1])
    return found


def listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket the processes hold."""
    inodes = _listening_inodes()
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                out.append((pid, *inodes[int(link[8:-1])]))
    return out

"""UDP transport for the feed: multicast (default) or unicast sender, receivers, pcap capture.

Multicast: group 239.1.1.1, port 5001 by default, TTL 1 (never leaves the host's network),
IP_MULTICAST_LOOP on so listeners on the same machine receive, and the outgoing interface set
explicitly (default 127.0.0.1, the loopback interface). ``unicast=(host, port)`` sends plain
UDP datagrams to one listener instead.

``PcapWriter`` writes a standard libpcap file (Ethernet link type) of the datagrams as sent, with
their IPv4/UDP headers, so tcpdump, Wireshark or tshark read it directly.

Batches. On 64-bit Linux, ``Sender.send_packets`` hands up to 1,024 packets to the kernel per
``sendmmsg(2)`` call and :class:`BatchReceiver` takes up to 256 datagrams per ``recvmmsg(2)`` call
(through ctypes; no Python code per packet). Elsewhere, or with ``QRSDP_ITCH_MMSG=0``, both fall
back to one ``sendmsg``/``recv`` per packet. The datagrams are the same either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import random
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_GROUP = "239.1.1.1"
DEFAULT_PORT = 5001
DEFAULT_INTERFACE = "127.0.0.1"
DEFAULT_RETRANSMIT_PORT = 5002
DEFAULT_TTL = 1
_SOCKET_BUFFER = 32 << 20


# ---------------------------------------------------------------------------
# sendmmsg / recvmmsg (Linux, LP64: struct iovec 16 bytes, struct mmsghdr 64 bytes)
# ---------------------------------------------------------------------------

IOVEC = np.dtype({"names": ["base", "len"], "formats": [np.uint64, np.uint64], "offsets": [0, 8], "itemsize": 16})
MMSGHDR = np.dtype({
    "names": ["name", "namelen", "iov", "iovlen", "control", "controllen", "flags", "len"],
    "formats": [np.uint64, np.uint32, np.uint64, np.uint64, np.uint64, np.uint64, np.int32, np.uint32],
    "offsets": [0, 8, 16, 24, 32, 40, 48, 56],
    "itemsize": 64,
})  # fmt: skip
MOLD_HEADER = np.dtype([("session", "S10"), ("seq", ">u8"), ("count", ">u2")])  # 20 bytes, as moldudp64.HEADER
SENDMMSG_MAX = 1024  # UIO_MAXIOV: the kernel's limit on messages per call
MMSG_ENV = "QRSDP_ITCH_MMSG"


def _libc_mmsg() -> tuple[object, object] | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        send, recv = libc.sendmmsg, libc.recvmmsg
    except (OSError, AttributeError):
        return None
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    return send, recv


_MMSG = _libc_mmsg()


def mmsg_available() -> bool:
    """True when sendmmsg/recvmmsg are used (64-bit Linux, and ``QRSDP_ITCH_MMSG`` is not ``0``)."""
    return _MMSG is not None and os.environ.get(MMSG_ENV, "1").strip() not in ("0", "false", "no")


def _sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(socket.gethostbyname(host)))


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return text, default_port
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    if not 0 <= number <= 65_535:
        raise ValueError(f"port {number} in {text!r} is not 0..65535")
    return host or "127.0.0.1", number


def check_port(name: str, port: int, *, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= port <= 65_535:
        raise ValueError(f"{name} must be a UDP port 1..65535, got {port}")


def check_ipv4(name: str, address: str, *, multicast: bool = False) -> None:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"{name} must be an IPv4 address, got {address!r}") from None
    if multicast and not ip.is_multicast:
        raise ValueError(f"{name} must be an IPv4 multicast address (224.0.0.0/4), got {address}")


def _set_buffer(sock: socket.socket, option: int, size: int) -> None:
    forced = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}.get(option)  # SO_RCVBUFFORCE / SO_SNDBUFFORCE
    try:
        if forced is not None:
            sock.setsockopt(socket.SOL_SOCKET, forced, size)  # beyond rmem_max/wmem_max (needs CAP_NET_ADMIN)
            return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)


class PcapWriter:
    """Minimal libpcap writer: Ethernet + IPv4 + UDP around each datagram (microsecond stamps)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        # magic, version 2.4, thiszone, sigfigs, snaplen, LINKTYPE_ETHERNET
        self._f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self._ident = 0
        self.packets = 0

    @staticmethod
    def _checksum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    def write(self, payload: bytes, src: tuple[str, int], dst: tuple[str, int], ttl: int = DEFAULT_TTL,
              ts: float | None = None) -> None:
        ts = time.time() if ts is None else ts
        src_ip, dst_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
        if dst_ip[0] >= 224 and dst_ip[0] <= 239:  # IPv4 multicast MAC 01:00:5e + low 23 bits of the group
            dst_mac = b"\x01\x00\x5e" + bytes([dst_ip[1] & 0x7F, dst_ip[2], dst_ip[3]])
        else:
            dst_mac = b"\0" * 6
        eth = dst_mac + b"\0" * 6 + b"\x08\x00"
        udp_len = 8 + len(payload)
        udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0)  # checksum 0: not computed (IPv4)
        self._ident = (self._ident + 1) & 0xFFFF
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, self._ident, 0x4000, ttl, 17, 0, src_ip, dst_ip)
        ip = ip[:10] + struct.pack("!H", self._checksum(ip)) + ip[12:]
        frame = eth + ip + udp + payload
        sec = int(ts)
        self._f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        self._f.write(frame)
        self.packets += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_pcap(path: str | os.PathLike[str]) -> list[tuple[float, bytes, tuple[str, int], tuple[str, int]]]:
    """(timestamp, UDP payload, src, dst) of every packet of a pcap written by :class:`PcapWriter`."""
    data = Path(path).read_bytes()
    magic, _vmaj, _vmin, _tz, _sig, _snap, link = struct.unpack_from("<IHHiIII", data, 0)
    if magic != 0xA1B2C3D4 or link != 1:
        raise ValueError("not a little-endian microsecond Ethernet pcap")
    pos = 24
    out = []
    while pos + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        src_ip, dst_ip = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        sport, dport, ulen, _ = struct.unpack_from("!HHHH", ip, ihl)
        out.append((sec + usec / 1e6, ip[ihl + 8 : ihl + ulen], (src_ip, sport), (dst_ip, dport)))
    return out


class Sender:
    """Sends MoldUDP64 packets to the multicast group (or a unicast address).

    ``loss``: probability of silently dropping a packet instead of sending it (tests of gap
    recovery); dropped packets are still counted in ``dropped`` and kept for retransmission by the
    caller, but are neither sent nor captured.
    """

    def __init__(
        self,
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        *,
        interface: str = DEFAULT_INTERFACE,
        ttl: int = DEFAULT_TTL,
        unicast: tuple[str, int] | None = None,
        pcap: str | os.PathLike[str] | None = None,
        loss: float = 0.0,
        loss_seed: int = 0,
    ) -> None:
        self.unicast = unicast
        self.dest = unicast if unicast is not None else (group, port)
        self.ttl = ttl
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        _set_buffer(sock, socket.SO_SNDBUF, _SOCKET_BUFFER)
        if unicast is None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            sock.bind((interface, 0))
        else:
            sock.bind(("127.0.0.1" if unicast[0] in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
        self.sock = sock
        self.source = sock.getsockname()
        self.pcap = PcapWriter(pcap) if pcap else None
        self.loss = float(loss)
        self._rng = random.Random(loss_seed)
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self._addr = np.frombuffer(_sockaddr_in(*self.dest), np.uint8).copy()  # for sendmmsg

    @property
    def batched(self) -> bool:
        """True when :meth:`send_packets` sends with sendmmsg (no simulated loss, no capture, Linux)."""
        return not self.loss and self.pcap is None and mmsg_available()

    def send(self, head: bytes, body: bytes | memoryview = b"", *, lossy: bool = True) -> None:
        """Send one datagram (header + body, no copy); ``lossy=False`` exempts it from simulated loss."""
        if lossy and self.loss and self._rng.random() < self.loss:
            self.dropped += 1
            return
        self._sendmsg([head, body] if len(body) else [head])
        self.packets += 1
        self.bytes += len(head) + len(body)
        if self.pcap is not None:
            self.pcap.write(head + bytes(body), (self.source[0], self.source[1]), self.dest, self.ttl)

    def _sendmsg(self, parts: list) -> None:
        for attempt in range(200):
            try:
                self.sock.sendmsg(parts, [], 0, self.dest)
                return
            except (BlockingIOError, InterruptedError):
                time.sleep(0.0005 * (attempt + 1))
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: the kernel queue is full; back off briefly
                    time.sleep(0.0005 * (attempt + 1))
                    continue
                raise
        raise OSError("UDP send kept failing (socket buffer full)")

    def send_packets(self, session: bytes, first_seq: int, data: np.ndarray, offsets: np.ndarray,
                     bounds: np.ndarray) -> None:
        """Send packet k for k in 0 .. len(bounds) - 2: the MoldUDP64 header (``session``, sequence
        number ``first_seq + bounds[k]``, count ``bounds[k + 1] - bounds[k]``) + the message blocks
        ``data[offsets[bounds[k]] : offsets[bounds[k + 1]]]``. With :attr:`batched` in sendmmsg calls
        of up to 1,024 packets, else one :meth:`send` per packet."""
        n = len(bounds) - 1
        if n <= 0:
            return
        starts, ends = offsets[bounds[:-1]], offsets[bounds[1:]]
        if not self.batched:
            view = memoryview(data)
            for k in range(n):
                head = struct.pack(">10sQH", session, first_seq + int(bounds[k]), int(bounds[k + 1] - bounds[k]))
                self.send(head, view[int(starts[k]) : int(ends[k])])
            return
        data = np.ascontiguousarray(data)
        heads = np.empty(n, MOLD_HEADER)
        heads["session"] = session
        heads["seq"] = bounds[:-1].astype(np.uint64) + np.uint64(first_seq)
        heads["count"] = np.diff(bounds)
        iov = np.empty((n, 2), IOVEC)
        iov["base"][:, 0] = heads.ctypes.data + 20 * np.arange(n, dtype=np.uint64)
        iov["len"][:, 0] = 20
        iov["base"][:, 1] = data.ctypes.data + starts.astype(np.uint64)
        iov["len"][:, 1] = ends - starts
        msgs = np.zeros(n, MMSGHDR)
        msgs["name"] = self._addr.ctypes.data
        msgs["namelen"] = len(self._addr)
        msgs["iov"] = iov.ctypes.data + 32 * np.arange(n, dtype=np.uint64)
        msgs["iovlen"] = 2
        sendmmsg = _MMSG[0]
        fd = self.sock.fileno()
        base = msgs.ctypes.data
        k = 0
        attempt = 0
        while k < n:
            sent = sendmmsg(fd, base + 64 * k, min(n - k, SENDMMSG_MAX), 0)
            if sent < 0:
                err = ctypes.get_errno()
                if err in (errno.EAGAIN, errno.EINTR, errno.ENOBUFS) and attempt < 200:
                    attempt += 1  # the kernel queue is full: back off briefly, as send() does
                    time.sleep(0.0005 * attempt)
                    continue
                raise OSError(err, f"sendmmsg: {os.strerror(err)}")
            k += sent
            attempt = 0
        self.packets += n
        self.bytes += 20 * n + int(ends[-1] - starts[0])

    def close(self) -> None:
        self.sock.close()
        if self.pcap is not None:
            self.pcap.close()


class BatchReceiver:
    """Datagrams of a socket in batches (``recvmmsg``): slot ``i`` of :attr:`slab` holds datagram ``i``
    of the last :meth:`receive` (``slot_size`` bytes per slot, so nothing is ever truncated)."""

    def __init__(self, sock: socket.socket, slots: int = 256, slot_size: int = 65536) -> None:
        if _MMSG is None:
            raise OSError("recvmmsg is not available here")
        self.sock = sock
        self.slots = slots
        self.slot_size = slot_size
        self.slab = np.empty(slots * slot_size, np.uint8)  # untouched pages cost nothing
        self._iov = np.empty(slots, IOVEC)
        self._iov["base"] = self.slab.ctypes.data + slot_size * np.arange(slots, dtype=np.uint64)
        self._iov["len"] = slot_size
        self._msgs = np.zeros(slots, MMSGHDR)
        self._msgs["iov"] = self._iov.ctypes.data + 16 * np.arange(slots, dtype=np.uint64)
        self._msgs["iovlen"] = 1
        self.lengths = self._msgs["len"]

    def receive(self) -> int:
        """Datagrams waiting now (0 when none); their lengths are ``lengths[:n]``."""
        n = _MMSG[1](self.sock.fileno(), self._msgs.ctypes.data, self.slots, socket.MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, f"recvmmsg: {os.strerror(err)}")
        return n


def open_receiver(
    group: str = DEFAULT_GROUP,
    port: int = DEFAULT_PORT,
    *,
    interface: str = DEFAULT_INTERFACE,
    unicast: tuple[str, int] | None = None,
    rcvbuf: int = 64 << 20,
) -> socket.socket:
    """A UDP socket receiving the feed: joined to the multicast group on ``interface``, or bound
    to the unicast address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _set_buffer(sock, socket.SO_RCVBUF, rcvbuf)
    if unicast is not None:
        sock.bind(unicast)
    else:
        sock.bind((group, port))  # only this group's datagrams, not every group on the port
        mreq = socket.inet_aton(group) + socket.inet_aton(interface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    return sock

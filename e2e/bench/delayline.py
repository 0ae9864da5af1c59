#!/usr/bin/env python3
"""A link with a fixed one-way delay between two network namespaces.

This machine's kernel has no sch_netem (`tc qdisc add ... netem` answers
"Specified qdisc kind is unknown"), so the tunnel benchmark's long-RTT row
gets its delay here instead: a TUN device in each namespace, and every IP
packet read from one written to the other DELAY_MS later. Packets, not
streams, cross it, so TCP's windows and congestion control run end to end
exactly as over a real long link; the queue is bounded like a router's
(packets beyond it are dropped, which TCP sees as loss).

    delayline.py NS_A IF_A NS_B IF_B DELAY_MS [QUEUE_PACKETS]

Creates IF_A in NS_A and IF_B in NS_B (both must exist as namespaces, and
the interfaces must not), prints "ready" once both are open, and forwards
until killed. Addresses and routes are the caller's (`ip addr add`).
"""

import collections
import ctypes
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MAX_PACKET = 65536

libc = ctypes.CDLL(None, use_errno=True)


def enter(namespace):
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {namespace}: {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    ns_a, if_a, ns_b, if_b, delay_ms = sys.argv[1:6]
    limit = int(sys.argv[6]) if len(sys.argv) > 6 else 20000
    delay = float(delay_ms) / 1000.0
    enter(ns_a)
    fd_a = open_tun(if_a)
    enter(ns_b)
    fd_b = open_tun(if_b)
    print("ready", flush=True)
    peer = {fd_a: fd_b, fd_b: fd_a}
    # Per output fd: (due time, packet), in arrival order; the delay is the
    # same for every packet, so due times are already sorted.
    queues = {fd_a: collections.deque(), fd_b: collections.deque()}
    poller = select.epoll()
    for fd in (fd_a, fd_b):
        poller.register(fd, select.EPOLLIN)
    while True:
        now = time.monotonic()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 1.0
        for fd, _ in poller.poll(timeout):
            out = queues[peer[fd]]
            stamp = time.monotonic() + delay
            # Drain what is readable now, bounded so writes are not starved.
            for _ in range(256):
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                if len(out) < limit:
                    out.append((stamp, packet))
        now = time.monotonic()
        for fd, queue in queues.items():
            while queue and queue[0][0] <= now:
                try:
                    os.write(fd, queue[0][1])
                except BlockingIOError:
                    break
                except OSError:
                    # EIO while that side's interface is still down: the
                    # packet is lost, as on a link that is not up yet.
                    pass
                queue.popleft()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A tiny DNS server for tests: answers A queries from a fixed table, NXDOMAIN otherwise.

Usage: tiny_dns.py ADDRESS PORT NAME=IPV4 [NAME=IPV4 ...]
Prints "ready" once listening, and one line per query ("query NAME") so a test can see
which names the resolver asked for.
"""
import socket
import struct
import sys


def parse_name(data, off):
    labels = []
    while data[off] != 0:
        n = data[off]
        labels.append(data[off + 1 : off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return ".".join(labels).lower(), off + 1


def main():
    addr, port, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    table = dict(p.split("=", 1) for p in pairs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(512)
        if len(data) < 12:
            continue
        qid, _flags, qd = struct.unpack(">HHH", data[:6])
        if qd != 1:
            continue
        name, end = parse_name(data, 12)
        qtype = struct.unpack(">H", data[end : end + 2])[0]
        question = data[12 : end + 4]
        print(f"query {name}", flush=True)
        ip = table.get(name)
        if ip is None:
            # NXDOMAIN, recursion available
            sock.sendto(struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question, peer)
        elif qtype != 1:
            # the name exists, no records of this type
            sock.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question, peer)
        else:
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
            sock.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer, peer)


if __name__ == "__main__":
    main()

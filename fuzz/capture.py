#!/usr/bin/env python3
"""Records real client sessions through pgweir and turns them into fuzz seeds.

    fuzz/capture.py tee LISTEN_PORT PGWEIR_PORT LOG_DIR
        A TCP tee: every connection to 127.0.0.1:LISTEN_PORT is relayed to pgweir on
        127.0.0.1:PGWEIR_PORT and logged to LOG_DIR/conn-N.log as records of
        (direction byte 0 = client / 1 = pgweir, 4-byte length, bytes). Stops on SIGTERM.

    fuzz/capture.py seeds LOG_DIR NAME
        Writes seeds named capture-NAME-N into fuzz/corpus/<target>/ from the logs:
        the startup packets (startup), the SCRAM exchange from both sides
        (scram_server, scram_client; nonces replaced by the harness's %N marker), the
        client's frames after login (scan_client), the session after login in both
        directions (scan_server), pgweir's answers (frame), and console sessions
        (admin_console, when the log's first startup packet names database pgbouncer).

Input layouts are those documented in crates/weir-fuzz.
"""

import os
import selectors
import signal
import socket
import struct
import sys

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def tee(listen_port, upstream_port, log_dir):
    os.makedirs(log_dir, exist_ok=True)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    conns = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        for key, _ in sel.select():
            if key.data is None:
                client, _ = srv.accept()
                up = socket.create_connection(("127.0.0.1", upstream_port))
                log = open(os.path.join(log_dir, "conn-%d.log" % conns), "wb")
                conns += 1
                sel.register(client, selectors.EVENT_READ, (0, client, up, log))
                sel.register(up, selectors.EVENT_READ, (1, up, client, log))
                continue
            direction, src, dst, log = key.data
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
                log.close()
                continue
            log.write(struct.pack(">BI", direction, len(data)) + data)
            log.flush()
            dst.sendall(data)


def read_log(path):
    records = []
    with open(path, "rb") as f:
        raw = f.read()
    pos = 0
    while pos + 5 <= len(raw):
        direction, n = struct.unpack(">BI", raw[pos : pos + 5])
        records.append((direction, raw[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return records


def initial_packets(stream):
    """Untagged packets at the start of a client stream: (packets, bytes used)."""
    packets, pos = [], 0
    while pos + 8 <= len(stream):
        (n,) = struct.unpack(">i", stream[pos : pos + 4])
        packets.append(stream[pos : pos + n])
        pos += n
        code = struct.unpack(">i", packets[-1][4:8])[0]
        if code not in (80877103, 80877104):  # SSLRequest / GSSENCRequest: another follows
            break
    return packets, pos


def frames(stream, pos=0):
    out = []
    while pos + 5 <= len(stream):
        tag = stream[pos]
        (n,) = struct.unpack(">i", stream[pos + 1 : pos + 5])
        if pos + 1 + n > len(stream):
            break
        out.append((tag, stream[pos + 5 : pos + 1 + n], pos, pos + 1 + n))
        pos += 1 + n
    return out


def records(direction_bytes):
    out = b""
    for direction, data in direction_bytes:
        for i in range(0, len(data), 255):
            piece = data[i : i + 255]
            out += bytes([direction, len(piece)]) + piece
    return out


def prefixed(b):
    return struct.pack(">H", len(b)) + b


def seeds(log_dir, name):
    written = 0

    def put(target, n, data):
        nonlocal written
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "capture-%s-%d" % (name, n)), "wb") as f:
            f.write(data)
        written += 1

    logs = sorted(f for f in os.listdir(log_dir) if f.endswith(".log"))
    for n, log in enumerate(logs):
        recs = read_log(os.path.join(log_dir, log))
        client = b"".join(d for k, d in recs if k == 0)
        server = b"".join(d for k, d in recs if k == 1)
        packets, used = initial_packets(client)
        if not packets:
            continue
        # pgweir answers an SSLRequest with one byte 'N' before any frame.
        server_start = 1 if len(packets) > 1 and server[:1] == b"N" else 0
        put("startup", n, b"\x00" + b"".join(packets))
        console = b"pgbouncer\x00" in packets[-1] or b"pgweir\x00" in packets[-1]

        cframes = frames(client, used)
        sframes = frames(server, server_start)
        sasl = [body for tag, body, _, _ in cframes if tag == ord("p")]
        auth = [body for tag, body, _, _ in sframes if tag == ord("R")]
        if len(sasl) >= 2 and len(auth) >= 3:
            first = sasl[0].split(b"\x00", 1)[1][4:]
            cnonce = first.split(b"r=", 1)[1].split(b",")[0]
            snonce = auth[1][4:].split(b"r=", 1)[1].split(b",")[0]
            put("scram_server", n, prefixed(sasl[0]) + sasl[1].replace(snonce, b"%N"))
            server_first = auth[1][4:].replace(cnonce, b"%N", 1)
            put("scram_client", n, prefixed(auth[0]) + prefixed(server_first) + auth[2][4:])

        # Login ends at the first ReadyForQuery; the client's last auth frame before it.
        login_end = next((end for tag, _, _, end in sframes if tag == ord("Z")), None)
        client_after = max((end for tag, _, _, end in cframes if tag == ord("p")), default=used)
        if login_end is None:
            continue
        put("frame", n, b"\x00" + server[server_start:])
        if console:
            put("admin_console", n, b"\x00\x00" + client[client_after:])
            continue
        put("scan_client", n, b"\x00\x00" + client[client_after:])
        # The session after login, in the order the bytes crossed the tee.
        session, cpos, spos = [], 0, 0
        for k, d in recs:
            if k == 0:
                lo, hi = cpos, cpos + len(d)
                cpos = hi
                cut = max(client_after - lo, 0)
            else:
                lo, hi = spos, spos + len(d)
                spos = hi
                cut = max(login_end - lo, 0)
            if cut < len(d):
                session.append((k, d[cut:]))
        put("scan_server", n, b"\x00" + records(session))
    print("wrote %d seeds from %d connections" % (written, len(logs)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["tee"] and len(sys.argv) == 5:
        tee(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1:2] == ["seeds"] and len(sys.argv) == 4:
        seeds(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

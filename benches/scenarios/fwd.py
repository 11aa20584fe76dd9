#!/usr/bin/env python3
"""A TCP forwarder that can turn into a black hole (for benches/scenarios.sh).

    fwd.py serve --listen PORT --upstream PORT --control PORT [--existing close|pause]
    fwd.py ctl CONTROL_PORT forward|blackhole|stats

serve: listens on 127.0.0.1:PORT and forwards each connection to
127.0.0.1:UPSTREAM ("forward" mode, the start). In "blackhole" mode:
  - new connections are accepted and then never answered (what they send is kept,
    nothing comes back), like a server whose host is up but whose process is
    wedged, or a partition on the way;
  - existing forwarded connections are closed on both sides (--existing close,
    the default: the pooler sees its server connections drop) or frozen, nothing
    forwarded either way until "forward" again (--existing pause).
Back in "forward" mode, frozen connections resume, and connections still held in
the black hole go on to PostgreSQL with what they sent meanwhile (as when a
partition heals); those whose client gave up are gone already.

ctl: sends one command to the control port and prints the answer; "stats" prints
JSON counters (connections accepted, forwarded, black-holed, healed = black-holed
and then forwarded, closed on the switch).
The control answer ("ok MODE at=T", T being time.monotonic() when the switch
began) comes after the switch is complete. Everything on 127.0.0.1.
"""
import argparse
import asyncio
import json
import socket
import sys
import time

HOST = "127.0.0.1"


class Forwarder:
    def __init__(self, upstream_port, existing):
        self.upstream_port = upstream_port
        self.existing = existing
        self.mode = "forward"
        self.forwarding = asyncio.Event()  # set while in forward mode
        self.forwarding.set()
        self.live = set()  # (client_writer, upstream_writer) of forwarded connections
        self.holes = set()  # client writers held in the black hole
        self.stats = {
            "accepted": 0,
            "forwarded": 0,
            "blackholed": 0,
            "healed": 0,
            "upstream_failed": 0,
            "closed_on_blackhole": 0,
            "switches": 0,
        }

    async def pipe(self, reader, writer, pair):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.forwarding.wait()  # frozen while black-holed (--existing pause)
                if pair not in self.live:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.drop(pair)

    def drop(self, pair):
        if pair in self.live:
            self.live.discard(pair)
            for w in pair:
                w.close()

    async def hold(self, reader, writer, buf):
        """Black hole: reads and keeps what the client sends, never answers, until
        forward mode (returns the bytes, to be sent on) or the client leaves (None)."""
        if writer not in self.holes:
            self.stats["blackholed"] += 1
            self.holes.add(writer)
        try:
            while self.mode == "blackhole":
                read = asyncio.ensure_future(reader.read(65536))
                heal = asyncio.ensure_future(self.forwarding.wait())
                done, _ = await asyncio.wait({read, heal}, return_when=asyncio.FIRST_COMPLETED)
                if read in done:
                    heal.cancel()
                    data = read.result()
                    if not data:
                        return None
                    buf += data
                else:
                    read.cancel()
            return buf
        except (ConnectionError, OSError):
            return None
        finally:
            self.holes.discard(writer)

    async def handle(self, reader, writer):
        self.stats["accepted"] += 1
        buf = b""
        held = False
        while True:
            if self.mode == "blackhole":
                held = True
                buf = await self.hold(reader, writer, buf)
                if buf is None:
                    writer.close()
                    return
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
            except OSError:
                # PostgreSQL refused (it is down): refuse the client too, by closing.
                self.stats["upstream_failed"] += 1
                writer.close()
                return
            if self.mode == "blackhole":  # switched while we connected
                up_writer.close()
                continue
            break
        # A connection accepted in the black hole goes on once it is over, like a
        # connection attempt whose packets get through when a partition heals.
        self.stats["healed" if held else "forwarded"] += 1
        for w in (writer, up_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (writer, up_writer)
        self.live.add(pair)
        if buf:
            up_writer.write(buf)
        await asyncio.gather(self.pipe(reader, up_writer, pair), self.pipe(up_reader, writer, pair))

    def switch(self, mode):
        at = time.monotonic()
        if mode == self.mode:
            return at
        self.stats["switches"] += 1
        self.mode = mode
        if mode == "blackhole":
            self.forwarding.clear()
            if self.existing == "close":
                for pair in list(self.live):
                    self.stats["closed_on_blackhole"] += 1
                    self.drop(pair)
        else:
            self.forwarding.set()
        return at

    async def control(self, reader, writer):
        try:
            line = (await reader.readline()).decode().strip()
            if line in ("forward", "blackhole"):
                at = self.switch(line)
                # at= is time.monotonic() (CLOCK_MONOTONIC, system-wide) of the switch,
                # so that a caller can time it without our start-up in between.
                answer = f"ok {self.mode} at={at:.6f}"
            elif line == "stats":
                answer = json.dumps(dict(self.stats, mode=self.mode, live=len(self.live), holes=len(self.holes)))
            else:
                answer = "error: unknown command " + repr(line)
            writer.write((answer + "\n").encode())
            await writer.drain()
        finally:
            writer.close()


async def serve(args):
    fwd = Forwarder(args.upstream, args.existing)
    server = await asyncio.start_server(fwd.handle, HOST, args.listen, backlog=1024, reuse_address=True)
    ctl = await asyncio.start_server(fwd.control, HOST, args.control, reuse_address=True)
    async with server, ctl:
        await asyncio.gather(server.serve_forever(), ctl.serve_forever())


def ctl(port, command):
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall((command + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = data.decode().strip()
    print(answer)
    return 1 if answer.startswith("error") or not answer else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", type=int, required=True)
    s.add_argument("--upstream", type=int, required=True)
    s.add_argument("--control", type=int, required=True)
    s.add_argument("--existing", choices=["close", "pause"], default="close")
    c = sub.add_parser("ctl")
    c.add_argument("port", type=int)
    c.add_argument("command", choices=["forward", "blackhole", "stats"])
    args = p.parse_args()
    if args.cmd == "serve":
        try:
            asyncio.run(serve(args))
        except KeyboardInterrupt:
            pass
        return 0
    return ctl(args.port, args.command)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A Python gRPC client balanced by disco over xDS, with no disco code in it.

It dials xds:///<target> with grpcio's own xDS resolver: the bootstrap named
by GRPC_XDS_BOOTSTRAP points it at disco's xDS server (sinks/xds), which
serves the target's endpoints; grpcio balances its calls over them and
follows them as pods come and go.

    GRPC_XDS_BOOTSTRAP=bootstrap.json python3 client.py xds:///greeter.demo:grpc

It calls grpc.testing.TestService/UnaryCall (the servers of disco's tests and
demo answer with their name in SimpleResponse.server_id) from a number of
concurrent callers and, driven by lines on stdin, reports what it saw as one
JSON line on stdout (disco's end-to-end tests drive it this way):

    load N    run N concurrent callers (0 stops them)
    report    {"ok": n, "failed": n, "per": {server: calls}, "errors": [...]},
              counted since the last report
    once      one call without waiting for ready: {"ok", "server", "error", "ms"}
    redial    close the channel and dial the target again
    keep T    dial target T on a second channel, kept open, and call it once
    quit

Needs grpcio with xDS (Debian's python3-grpcio has it) and nothing else: the
request is empty and the reply's server_id is read from its wire form, so no
generated code is needed.
"""

import json
import sys
import threading
import time

import grpc

METHOD = "/grpc.testing.TestService/UnaryCall"


def server_id(reply: bytes) -> str:
    """Field 4 (server_id, a string) of a grpc.testing.SimpleResponse."""
    i = 0

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = reply[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(reply):
        key = varint()
        field, kind = key >> 3, key & 7
        if kind == 0:
            varint()
        elif kind == 2:
            n = varint()
            if field == 4:
                return reply[i:i + n].decode()
            i += n
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        else:
            raise ValueError("unexpected wire type %d" % kind)
    return ""


class Client:
    def __init__(self, target):
        self.target = target
        self.lock = threading.Lock()
        self.channel = None
        self.call = None
        self.dial()
        self.want = 0  # callers wanted
        self.running = 0
        self.ok = 0
        self.failed = 0
        self.per = {}
        self.errors = []
        self.kept = []

    def keep(self, target):
        """Dials target on a channel of its own, kept open, and calls it once
        so that it subscribes."""
        channel = grpc.insecure_channel(target)
        self.kept.append(channel)
        call = channel.unary_unary(METHOD, request_serializer=lambda r: r, response_deserializer=lambda r: r)
        try:
            call(b"", timeout=5, wait_for_ready=False)
            return {"kept": True}
        except grpc.RpcError as e:
            return {"kept": True, "error": "%s: %s" % (e.code().name, e.details())}

    def dial(self):
        channel = grpc.insecure_channel(self.target)
        call = channel.unary_unary(METHOD, request_serializer=lambda r: r, response_deserializer=lambda r: r)
        with self.lock:
            old, self.channel, self.call = self.channel, channel, call
        if old is not None:
            old.close()

    def one(self, timeout):
        with self.lock:
            call = self.call
        return server_id(call(b"", timeout=timeout, wait_for_ready=False))

    def caller(self, n):
        while True:
            with self.lock:
                if n >= self.want:
                    self.running -= 1
                    return
            try:
                name = self.one(5)
            except grpc.RpcError as e:
                with self.lock:
                    self.failed += 1
                    if len(self.errors) < 10:
                        self.errors.append("%s: %s" % (e.code().name, e.details()))
                time.sleep(0.01)
                continue
            except ValueError as e:  # a closed channel during redial
                with self.lock:
                    self.failed += 1
                    if len(self.errors) < 10:
                        self.errors.append(str(e))
                continue
            with self.lock:
                self.ok += 1
                self.per[name] = self.per.get(name, 0) + 1

    def load(self, n):
        with self.lock:
            self.want = n
            start = range(self.running, n)
            self.running = max(self.running, n)
        for i in start:
            threading.Thread(target=self.caller, args=(i,), daemon=True).start()

    def report(self):
        with self.lock:
            r = {"ok": self.ok, "failed": self.failed, "per": self.per, "errors": self.errors}
            self.ok, self.failed, self.per, self.errors = 0, 0, {}, []
        return r

    def once(self):
        begin = time.monotonic()
        try:
            r = {"ok": True, "server": self.one(30)}
        except grpc.RpcError as e:
            r = {"ok": False, "error": "%s: %s" % (e.code().name, e.details())}
        r["ms"] = int((time.monotonic() - begin) * 1000)
        return r


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: client.py xds:///<target>")
    client = Client(sys.argv[1])
    print(json.dumps({"started": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "load":
            client.load(int(cmd[1]))
            out = {"load": int(cmd[1])}
        elif cmd[0] == "report":
            out = client.report()
        elif cmd[0] == "once":
            out = client.once()
        elif cmd[0] == "redial":
            client.dial()
            out = {"redialed": True}
        elif cmd[0] == "keep":
            out = client.keep(cmd[1])
        elif cmd[0] == "quit":
            break
        else:
            out = {"error": "unknown command %r" % cmd[0]}
        print(json.dumps(out), flush=True)
    client.load(0)


if __name__ == "__main__":
    main()

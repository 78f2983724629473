#!/usr/bin/env python3
"""A legitimate request's latency on the monitor's own listener while one hostile client holds
every connection it can (half-sent request heads, reopened as they are closed), against the same
request with no hostile client, in the same run.

    bench/fair.py [ROUNDS]     (TSM_BIN overrides target/release/tailscale-monitor)

The listener is `[metrics] listen` (`/healthz`); `[webhooks] listen` is served by the same code
(src/listener.rs). The hostile client connects from 127.0.0.2, the legitimate one from 127.0.0.1.
"""
import os, re, socket, statistics, subprocess, sys, tempfile, threading, time

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
binary = os.environ.get("TSM_BIN", "target/release/tailscale-monitor")
d = tempfile.mkdtemp()
cfg = os.path.join(d, "config.toml")
open(cfg, "w").write(
    '[tailscale]\nsocket = "%s/none.sock"\n\n[state]\ndir = "%s/state"\n\n[metrics]\nlisten = "127.0.0.1:0"\n' % (d, d))
os.chmod(cfg, 0o600)
p = subprocess.Popen([binary, "--config", cfg, "run"], stderr=subprocess.PIPE, text=True)
port = None
for line in p.stderr:
    m = re.search(r"metrics listening.*127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()


def get():
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while s.recv(4096):
        pass
    s.close()
    return (time.perf_counter() - t0) * 1000


stop = False


def hostile():
    held = []
    while not stop:
        while len(held) < 200 and not stop:
            try:
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.settimeout(2)
                s.connect(("127.0.0.1", port))
                s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            except OSError:
                break
        # Reopen what the server closed.
        alive = []
        for s in held:
            try:
                s.setblocking(False)
                if s.recv(1) == b"":
                    s.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            alive.append(s)
        held = alive
        time.sleep(0.01)


def measure():
    return [get() for _ in range(rounds)]


quiet = measure()
t = threading.Thread(target=hostile, daemon=True)
t.start()
time.sleep(1)
loud = measure()
stop = True
p.terminate()
p.wait()


def show(name, v):
    v = sorted(v)
    print("%-42s p50 %7.1f ms   p99 %7.1f ms   max %7.1f ms" % (name, statistics.median(v), v[int(len(v) * 0.99) - 1], v[-1]))


show("no hostile client (baseline)", quiet)
show("one client holding every slot it can", loud)

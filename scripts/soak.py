#!/usr/bin/env python3
"""A soak of sluice on the namespace lab under the changes operators make.

    soak.py BIN MINUTES ID STATE_DIR

(scripts/soak.sh builds sluice, runs this as root and cleans up.) Brings up
the lab (scripts/netlab.sh: 4 backends, 2 clients), starts sluice (AF_PACKET)
with service "web" on 198.18.0.100:80, and for the whole run keeps
- pooled keep-alive clients (scripts/lab_pool.py: 8 connections, a request
  each every 100 ms, a request that fails on a reused connection retried
  once on a new one, as common pools do) on client 1,
- short connections (scripts/lab_short.py: one request per connection) on
  client 2,
while a driver cycles through what operators do: add an endpoint, change a
weight, drain with a deadline and remove after it, set the whole endpoint
list, reload an edited file, a graceful restart (SIGTERM, flows saved and
restored), a kill -9 restart, a burst of malformed frames, and a spoofed SYN
flood. Every 2 s it samples sluice's resident memory and flow-table
occupancy. At the end it prints a report (requests and failures by kind,
which a client would retry, memory, occupancy, control-change latency
percentiles, restarts survived) and exits non-zero if
- a request failed that a client would not retry (a pooled request that
  failed after its retry, a short connection that failed after it was
  accepted: timeout, reset or close mid-response),
- sluice's memory grew without bound: within one process, resident memory
  at its last sample more than 64 MiB above its first sample taken 20 s
  after it started (tables and rings are allocated at start, so growth
  after that is a leak),
- sluice died without being told to, or a change or restart failed.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

VIP = "198.18.0.100"
PORT = 80
BPORT = 8080
CLIENT_MAC = "02:00:00:00:01:fe"  # sluice's l0 (scripts/netlab.sh)
HERE = os.path.dirname(os.path.abspath(__file__))


def backend(i):
    return f"10.200.2.{10 + i}"


def ep(i):
    return f"{backend(i)}:{BPORT}"


class Soak:
    def __init__(self, binary, minutes, lab_id, state):
        self.bin = binary
        self.seconds = minutes * 60
        self.id = lab_id
        self.state = state
        self.sock = os.path.join(state, "sluice.sock")
        self.conf = os.path.join(state, "sluice.toml")
        self.log = open(os.path.join(state, "sluice.log"), "ab")
        self.proc = None
        self.planned_stop = False
        self.events = []  # (t, what, seconds it took, ok)
        self.samples = []  # (t, pid, rss_kib, occupancy)
        self.unexpected_exit = None
        self.children = []
        self.t0 = time.time()

    # -- helpers -------------------------------------------------------
    def ns(self, name, *cmd, **kw):
        return subprocess.run(["ip", "netns", "exec", f"sl-{self.id}-{name}", *cmd], **kw)

    def spawn(self, name, *cmd, out=None):
        p = subprocess.Popen(["ip", "netns", "exec", f"sl-{self.id}-{name}", *cmd],
                             stdout=out or subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(p)
        return p

    def ctl(self, *args, timeout=30):
        t = time.monotonic()
        r = subprocess.run([self.bin, "ctl", "--socket", self.sock, *args],
                           capture_output=True, text=True, timeout=timeout)
        return r.returncode == 0, time.monotonic() - t, (r.stdout + r.stderr).strip()

    def event(self, what, seconds, ok, detail=""):
        t = round(time.time() - self.t0, 1)
        self.events.append({"t": t, "what": what, "s": round(seconds, 4), "ok": ok})
        print(f"[{t:7.1f}s] {what}: {'ok' if ok else 'FAILED'} in {seconds * 1e3:.1f} ms"
              + (f" ({detail})" if detail and not ok else ""), flush=True)

    def change(self, what, *args):
        try:
            ok, s, out = self.ctl(*args)
        except subprocess.TimeoutExpired:
            ok, s, out = False, 30.0, "timed out"
        self.event(what, s, ok, out)
        return ok

    def write_config(self, weights):
        eps = "".join(f"[[service.endpoint]]\naddress = \"{backend(i)}\"\nport = {BPORT}\nweight = {w}\n\n"
                      for i, w in weights)
        with open(self.conf, "w") as f:
            f.write(f"""[control]
socket = "{self.sock}"

[dataplane]
backend = "afpacket"
workers = 1
flow_capacity = 65536
idle = {{ mode = "backoff", spin_polls = 2000, sleep_us = 50 }}

[[interface]]
name = "l0"
address = "10.200.1.254/24"

[[interface]]
name = "l1"
address = "10.200.2.254/24"

[[service]]
name = "web"
vip = "{VIP}"
port = {PORT}
protocol = "tcp"

{eps}""")

    def start_sluice(self):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", f"sl-{self.id}-lb", self.bin, "run", "--config", self.conf],
            stdout=self.log, stderr=self.log)
        self.planned_stop = False
        ok, s, out = self.ctl("wait", "--ready", "--timeout", "10s", timeout=15)
        return ok

    def stop_sluice(self, sig):
        self.planned_stop = True
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False
        return True

    def restart(self, what, sig):
        t = time.monotonic()
        ok = self.stop_sluice(sig) and self.start_sluice()
        self.event(what, time.monotonic() - t, ok)
        return ok

    # -- sampling ------------------------------------------------------
    def sampler(self, stop):
        while not stop.wait(2.0):
            p = self.proc
            if p is None:
                continue
            if p.poll() is not None:
                if not self.planned_stop and self.unexpected_exit is None:
                    self.unexpected_exit = {"t": round(time.time() - self.t0, 1), "code": p.returncode}
                    print(f"sluice exited unexpectedly: {self.unexpected_exit}", flush=True)
                continue
            rss = None
            pid = self.sluice_pid(p)
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1])
            except OSError:
                continue
            occ = None
            try:
                r = subprocess.run([self.bin, "ctl", "--json", "--socket", self.sock, "stats"],
                                   capture_output=True, text=True, timeout=5)
                if r.returncode == 0:
                    stats = json.loads(r.stdout)["result"]
                    occ = sum(w.get("flows_active", 0) for w in stats.get("workers", []))
            except (subprocess.TimeoutExpired, ValueError, KeyError):
                pass
            if rss is not None:
                self.samples.append((round(time.time() - self.t0, 1), pid, rss, occ))

    @staticmethod
    def sluice_pid(p):
        # `ip netns exec` execs the command: the child's pid is sluice's.
        return p.pid

    # -- the run -------------------------------------------------------
    def run(self):
        subprocess.run([os.path.join(HERE, "netlab.sh"), "up", self.id, "4", "2"], check=True,
                       stdout=subprocess.DEVNULL)
        for i in range(1, 5):
            p = subprocess.Popen(["ip", "netns", "exec", f"sl-{self.id}-b{i}", "python3",
                                  os.path.join(HERE, "lab_server.py"), f"b{i}", backend(i), str(BPORT)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.children.append(p)
            assert p.stdout.readline().startswith("listening"), f"backend b{i} did not start"
        self.write_config([(1, 1), (2, 1), (3, 1)])
        if not self.start_sluice():
            print("sluice did not become ready", file=sys.stderr)
            return 1
        self.event("start", 0, True)
        pool_out = open(os.path.join(self.state, "pool.jsonl"), "w")
        short_out = open(os.path.join(self.state, "short.jsonl"), "w")
        client_secs = str(self.seconds)
        pool = self.spawn("c1", "python3", os.path.join(HERE, "lab_pool.py"), VIP, str(PORT), client_secs,
                          "--conns", "8", "--think", "0.1", "--timeout", "5", out=pool_out)
        short = self.spawn("c2", "python3", os.path.join(HERE, "lab_short.py"), VIP, str(PORT), client_secs,
                           "--gap", "0.02", "--timeout", "5", out=short_out)
        stop = threading.Event()
        th = threading.Thread(target=self.sampler, args=(stop,), daemon=True)
        th.start()
        steps = [
            ("endpoint add b4", lambda: self.change("endpoint add b4", "endpoint", "add", "web", ep(4))),
            ("weight b1 = 3", lambda: self.change("weight b1=3", "endpoint", "weight", "web", ep(1), "3")),
            ("drain b2, deadline 5 s", self.drain_and_remove),
            ("endpoints set", lambda: self.change(
                "endpoints set b1..b4", "endpoints", "set", "web", f"{ep(1)}=2", ep(2), ep(3), ep(4))),
            ("malformed burst", self.malformed),
            ("reload", self.reload),
            ("graceful restart", lambda: self.restart("graceful restart (SIGTERM, flows saved)", signal.SIGTERM)),
            ("spoofed SYN flood", self.flood),
            ("kill -9 restart", lambda: self.restart("kill -9 restart", signal.SIGKILL)),
            ("weight b1 = 1", lambda: self.change("weight b1=1", "endpoint", "weight", "web", ep(1), "1")),
        ]
        end = self.t0 + self.seconds - 15
        k = 0
        failed_steps = 0
        time.sleep(15)
        while time.time() + 10 < end:
            name, step = steps[k % len(steps)]
            k += 1
            try:
                if step() is False:
                    failed_steps += 1
            except Exception as e:  # a step that crashes is a failed change
                self.event(name, 0, False, repr(e))
                failed_steps += 1
            time.sleep(8)
        for p in (pool, short):
            try:
                p.wait(timeout=max(30, end + 30 - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        stop.set()
        th.join()
        pool_out.close()
        short_out.close()
        alive = self.proc.poll() is None
        if alive:
            self.stop_sluice(signal.SIGTERM)
        return self.report(failed_steps, alive)

    def drain_and_remove(self):
        ok = self.change("drain b2 (deadline 5 s)", "endpoint", "drain", "web", ep(2), "--deadline", "5s")
        time.sleep(6)
        ok &= self.change("remove b2 after its deadline", "endpoint", "remove", "web", ep(2))
        time.sleep(2)
        ok &= self.change("add b2 back", "endpoint", "add", "web", ep(2))
        return ok

    def reload(self):
        self.write_config([(1, 2), (2, 1), (3, 1), (4, 1)])
        return self.change("reload an edited file", "reload")

    def malformed(self):
        t = time.monotonic()
        r = self.ns("c1", "python3", os.path.join(HERE, "lab_raw.py"), "malformed", "c0", CLIENT_MAC,
                    "10.200.1.11", VIP, str(PORT), "200", capture_output=True, text=True, timeout=60)
        self.event("malformed burst (200 rounds of every kind)", time.monotonic() - t, r.returncode == 0,
                   r.stderr[-300:])
        return r.returncode == 0

    def flood(self):
        t = time.monotonic()
        r = self.ns("c2", "python3", os.path.join(HERE, "lab_raw.py"), "flood", "c0", CLIENT_MAC, VIP,
                    str(PORT), "20000", "198.19", capture_output=True, text=True, timeout=120)
        self.event(f"spoofed SYN/ACK flood {r.stdout.strip()}", time.monotonic() - t, r.returncode == 0,
                   r.stderr[-300:])
        return r.returncode == 0

    # -- the report ----------------------------------------------------
    def report(self, failed_steps, alive_at_end):
        pool = [json.loads(l) for l in open(os.path.join(self.state, "pool.jsonl")) if l.strip()]
        short = [json.loads(l) for l in open(os.path.join(self.state, "short.jsonl")) if l.strip()]
        pool_done = next((d for d in pool if d.get("done")), {})
        short_done = next((d for d in short if d.get("done")), {})
        pool_errors = {}
        for d in pool:
            if "error" in d:
                pool_errors[d["error"]] = pool_errors.get(d["error"], 0) + 1
        lat = sorted(e["s"] for e in self.events
                     if e["ok"] and not e["what"].startswith(("start", "graceful", "kill", "malformed", "spoofed")))

        def pct(p):
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3, 2)

        by_pid = {}
        for t, pid, rss, occ in self.samples:
            by_pid.setdefault(pid, []).append((t, rss, occ))
        growth = []
        for pid, s in by_pid.items():
            start = s[0][0]
            warm = [x for x in s if x[0] >= start + 20]
            if len(warm) >= 2:
                growth.append({"pid": pid, "from_kib": warm[0][1], "to_kib": warm[-1][1],
                               "seconds": round(warm[-1][0] - warm[0][0], 1)})
        rss_all = [x[2] for x in self.samples]
        occ_all = [x[3] for x in self.samples if x[3] is not None]
        restarts = [e for e in self.events if "restart" in e["what"]]
        fatal_short = sum((short_done.get("fatal") or {}).values())
        leak = [g for g in growth if g["to_kib"] - g["from_kib"] > 64 * 1024]
        report = {
            "minutes": round(self.seconds / 60, 1),
            "pool": {"requests": pool_done.get("requests"), "failed": pool_done.get("failed"),
                     "retried": pool_done.get("retried"), "connections": pool_done.get("connections"),
                     "errors": pool_errors},
            "short": {"requests": short_done.get("requests"), "ok": short_done.get("ok"),
                      "retryable": short_done.get("retryable"), "fatal": short_done.get("fatal"),
                      "backends": short_done.get("backends")},
            "rss_kib": {"first": rss_all[0] if rss_all else None, "last": rss_all[-1] if rss_all else None,
                        "max": max(rss_all) if rss_all else None, "per_process": growth},
            "occupancy": {"samples": len(occ_all), "min": min(occ_all) if occ_all else None,
                          "max": max(occ_all) if occ_all else None,
                          "every_30s": [x[3] for x in self.samples[::15]]},
            "change_latency_ms": {"n": len(lat), "p50": pct(50), "p99": pct(99),
                                  "max": round(lat[-1] * 1e3, 2) if lat else None},
            "restarts": {"done": len(restarts), "ok": sum(e["ok"] for e in restarts),
                         "seconds": [e["s"] for e in restarts]},
            "failed_changes": failed_steps,
            "sluice_died": self.unexpected_exit,
        }
        print(json.dumps(report, indent=1))
        problems = []
        if not pool_done or not short_done:
            problems.append("a client did not finish")
        if pool_done.get("failed"):
            problems.append(f"{pool_done['failed']} pooled requests failed after their retry")
        if fatal_short:
            problems.append(f"{fatal_short} short connections failed after being accepted")
        if leak:
            problems.append(f"memory grew by more than 64 MiB within a process: {leak}")
        if self.unexpected_exit or not alive_at_end:
            problems.append(f"sluice died: {self.unexpected_exit}")
        if failed_steps:
            problems.append(f"{failed_steps} changes or restarts failed")
        for p in problems:
            print(f"SOAK FAILED: {p}", file=sys.stderr)
        if not problems:
            print("soak passed: no request failed that a client would not retry")
        return 1 if problems else 0

    def cleanup(self):
        for p in self.children + ([self.proc] if self.proc else []):
            if p.poll() is None:
                p.kill()


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    s = Soak(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4])
    try:
        rc = s.run()
    finally:
        s.cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The soak driver: real clients through sluice for MINUTES while the
changes operators make run in a loop; samples and a verdict. Started by
scripts/soak.sh, which builds sluice and brings the namespace lab up
(netlab.sh: 4 backends, 2 clients) and down.

    soak.py --lab ID --bin SLUICE --state DIR --minutes M [--break KIND]

Clients, for the whole run: in each client namespace a keep-alive pool
(lab_pool.py: 6 connections, a request on each every 0.2 s, a request that
fails on a reused connection before its answer is retried once on a new
one) and short connections (lab_short.py: a connection per request,
failures classified retryable or fatal). Backends: lab_server.py.

The driver cycles through, a few seconds apart: endpoint add; weight
change; drain with a deadline, then remove once drained; a burst of
malformed frames; `endpoints set` of the whole set; `reload` of an edited
config file; a spoofed SYN/ACK flood (sources in 198.19/16, lab addresses);
a graceful restart (SIGTERM, start again: flows come back from the
snapshot); drain and remove an endpoint; `kill -9` and start again (no
snapshot: flows picked up mid-stream by Maglev). The config file always
holds the endpoint set in force, as an operator's would, so a restart
starts from what ran before it.

Samples every 2 s: sluice's VmRSS, flow-table occupancy (`ctl stats`).
Each control change: the time `ctl` took to return, and the time until
`stats` shows it.

Verdict (exit status 1 when any holds):
  * a request failed that its client would not retry: lab_short's fatal
    failures (timeout, reset or close mid-response), lab_pool's failed
    requests (a failure on a fresh connection, or of the retry);
  * memory grew without bound: RSS at the end more than 25 % + 16 MiB over
    the post-warm-up RSS (the first sample 60 s into the run, once every
    step of a cycle has run at least once is too late for a short run);
  * sluice died when the driver did not kill it, or a restart did not
    come back ready within 30 s.

--no-restarts leaves out both restarts, so one process lives the whole run
and the memory bound judges a long-lived process (with restarts, each
process lives about a minute, and the bound compares one incarnation's RSS
with another's).

--break KIND runs a deliberately wrong step, to check the soak catches it:
  remove-undrained  removes endpoints without draining them first
  no-restart        kill -9 without starting sluice again
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

VIP = "198.18.0.100"
LB_MAC = "02:00:00:00:01:fe"
BACKENDS = {i: f"10.200.2.{10 + i}:8080" for i in range(1, 5)}
WARMUP_S = 60.0
RSS_FACTOR, RSS_SLACK_KB = 1.25, 16 * 1024
SCRIPTS = os.path.dirname(os.path.abspath(__file__))


def now():
    return time.monotonic()


class Soak:
    def __init__(self, a):
        self.a = a
        self.ns = lambda n: f"sl-{a.lab}-{n}"
        self.sock = os.path.join(a.state, "sluice.sock")
        self.cfg = os.path.join(a.state, "sluice.toml")
        self.sluice = None
        self.expect_alive = False
        self.died = []  # unexpected deaths: (t, returncode)
        self.restarts = {"graceful": 0, "kill9": 0}
        self.restart_s = []
        self.changes = []  # {"op", "ctl_ms", "visible_ms", "ok"}
        self.samples = []  # {"t", "rss_kb", "flows", "capacity"}
        self.events = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = now()
        # The endpoint set in force: backend index -> (weight, state).
        self.eps = {1: 1, 2: 1, 3: 1}
        self.procs = []

    # ---- lab pieces
    def log(self, msg):
        line = f"[{now() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.events.append(line)

    def write_config(self):
        eps = "".join(
            f'\n[[service.endpoint]]\naddress = "{BACKENDS[i].split(":")[0]}"\nport = 8080\nweight = {w}\n'
            for i, w in sorted(self.eps.items())
        )
        text = f"""[control]
socket = "{self.sock}"

[dataplane]
backend = "afpacket"
workers = 1
flow_capacity = 16384
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
port = 80
protocol = "tcp"
{eps}"""
        tmp = self.cfg + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.cfg)

    def spawn(self, ns, args, out):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(ns)] + args, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def ctl(self, *args, timeout=30):
        t = now()
        r = subprocess.run([self.a.bin, "ctl", "--socket", self.sock, "--json"] + list(args),
                           capture_output=True, text=True, timeout=timeout)
        ms = (now() - t) * 1000
        try:
            j = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            j = {"raw": r.stdout}
        return r.returncode, j, ms, r.stderr.strip()

    def start_sluice(self):
        log = open(os.path.join(self.a.state, "sluice.log"), "a")
        log.write(f"==== start at {now() - self.t0:.1f}s\n")
        log.flush()
        self.sluice = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("lb"), self.a.bin, "run", "--config", self.cfg],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="info"))
        t = now()
        while not os.path.exists(self.sock) and now() - t < 10:
            if self.sluice.poll() is not None:
                break
            time.sleep(0.02)
        rc, _, _, err = self.ctl("wait", "--ready", "--timeout", "30s", timeout=40)
        if rc != 0:
            self.log(f"sluice not ready: {err}")
            return None
        self.expect_alive = True
        return now() - t

    def stop_sluice(self, sig):
        self.expect_alive = False
        p = self.sluice
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        return p.returncode

    # ---- sampling
    def stats(self):
        rc, j, _, _ = self.ctl("stats", timeout=10)
        return j.get("result", j) if rc == 0 else None

    def sampler(self):
        while not self.stop.wait(2.0):
            with self.lock:
                p = self.sluice
                if p is not None and p.poll() is not None and self.expect_alive:
                    self.died.append((now() - self.t0, p.returncode))
                    self.log(f"sluice DIED unexpectedly (exit {p.returncode})")
                    self.expect_alive = False
                    self.stop.set()
                    return
                if p is None or p.poll() is not None or not self.expect_alive:
                    continue
                rss = None
                try:
                    with open(f"/proc/{p.pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                rss = int(line.split()[1])
                except OSError:
                    pass
                s = self.stats()
            flows = cap = None
            if s:
                ws = s.get("workers", [])
                flows = sum(w.get("flows_active", 0) for w in ws)
                cap = sum(w.get("flow_capacity", 0) for w in ws)
            self.samples.append({"t": round(now() - self.t0, 1), "rss_kb": rss, "flows": flows,
                                 "capacity": cap, "pid": p.pid})

    # ---- control changes
    def endpoint_view(self):
        s = self.stats() or {}
        for svc in s.get("services", []):
            if svc.get("name") == "web":
                return {e["endpoint"]: (e["weight"], e["state"]) for e in svc.get("endpoints", [])}
        return {}

    def change(self, op, args, visible):
        """Runs `ctl ARGS`; `visible(view)` says when stats show it."""
        with self.lock:
            rc, j, ms, err = self.ctl(*args)
            t = now()
            vis_ms = None
            while rc == 0 and now() - t < 5:
                if visible(self.endpoint_view()):
                    vis_ms = ms + (now() - t) * 1000
                    break
                time.sleep(0.005)
        ok = rc == 0 and j.get("ok", True) is not False
        self.changes.append({"op": op, "ctl_ms": ms, "visible_ms": vis_ms, "ok": ok})
        self.log(f"{op}: {'ok' if ok else 'FAILED ' + err + json.dumps(j)} ctl {ms:.1f} ms"
                 + (f", visible {vis_ms:.1f} ms" if vis_ms is not None else ""))
        return ok

    def add(self, i):
        self.eps[i] = 1
        self.change(f"endpoint add b{i}", ["endpoint", "add", "web", BACKENDS[i]],
                    lambda v: BACKENDS[i] in v)

    def weight(self, i, w):
        self.eps[i] = w
        self.change(f"endpoint weight b{i}={w}", ["endpoint", "weight", "web", BACKENDS[i], str(w)],
                    lambda v: v.get(BACKENDS[i], (0,))[0] == w)

    def drain_remove(self, i, deadline_s=3):
        if self.a.brk != "remove-undrained":
            self.change(f"endpoint drain b{i} --deadline {deadline_s}s",
                        ["endpoint", "drain", "web", BACKENDS[i], "--deadline", f"{deadline_s}s"],
                        lambda v: v.get(BACKENDS[i], (0, ""))[1] != "active")
            self.pause(deadline_s + 1)
        del self.eps[i]
        self.change(f"endpoint remove b{i}", ["endpoint", "remove", "web", BACKENDS[i]],
                    lambda v: BACKENDS[i] not in v)

    def set_all(self, weights):
        self.eps = dict(weights)
        args = ["endpoints", "set", "web"] + [f"{BACKENDS[i]}={w}" for i, w in sorted(weights.items())]
        want = {BACKENDS[i]: w for i, w in weights.items()}
        self.change("endpoints set " + " ".join(f"b{i}={w}" for i, w in sorted(weights.items())), args,
                    lambda v: {k: x[0] for k, x in v.items()} == want)

    def reload(self, weights):
        self.eps = dict(weights)
        self.write_config()
        want = {BACKENDS[i]: w for i, w in weights.items()}
        self.change("reload " + " ".join(f"b{i}={w}" for i, w in sorted(weights.items())),
                    ["reload", self.cfg], lambda v: {k: x[0] for k, x in v.items()} == want)

    def restart(self, graceful):
        kind = "graceful" if graceful else "kill9"
        self.write_config()
        with self.lock:
            t = now()
            rc = self.stop_sluice(signal.SIGTERM if graceful else signal.SIGKILL)
            if graceful and rc != 0:
                self.log(f"graceful stop exited {rc}")
                self.died.append((now() - self.t0, rc))
            if not graceful and self.a.brk == "no-restart":
                self.log("kill -9 and NOT starting again (--break no-restart)")
                self.sluice_gone = True
                return
            if not graceful:
                try:
                    os.unlink(self.sock)  # a kill -9 leaves it; a supervisor would not care
                except OSError:
                    pass
            ready = self.start_sluice()
        if ready is None:
            self.died.append((now() - self.t0, "not ready after restart"))
            self.stop.set()
            return
        self.restarts[kind] += 1
        self.restart_s.append({"kind": kind, "down_to_ready_s": now() - t})
        self.log(f"{kind} restart: ready {now() - t:.2f} s after the signal")

    def burst(self):
        r = subprocess.run(["ip", "netns", "exec", self.ns("c1"), "python3", f"{SCRIPTS}/lab_raw.py", "malformed",
                            "c0", LB_MAC, "10.200.1.11", VIP, "80", "100"], capture_output=True, text=True)
        sent = sum(json.loads(r.stdout).get("sent", {}).values()) if r.returncode == 0 else 0
        self.log(f"malformed burst: {sent} frames")

    def flood(self):
        r = subprocess.run(["ip", "netns", "exec", self.ns("c2"), "python3", f"{SCRIPTS}/lab_raw.py", "flood",
                            "c0", LB_MAC, VIP, "80", "30000", "198.19"], capture_output=True, text=True)
        self.log(f"SYN/ACK flood: {r.stdout.strip() or r.stderr.strip()}")

    def pause(self, s):
        self.stop.wait(s)

    def cycle(self, k):
        gap = 5
        # The drained endpoint rotates over b1-b3: keep-alive connections
        # that moved off one drained endpoint meet the next drain.
        v = k % 3 + 1
        w = v % 3 + 1
        graceful = [] if self.a.no_restarts else [lambda: self.restart(True)]
        kill9 = [] if self.a.no_restarts else [lambda: self.restart(False)]
        steps = [
            lambda: self.add(4),
            lambda: self.weight(w, 3),
            lambda: self.drain_remove(v),
            self.burst,
            lambda: self.set_all({1: 1, 2: 1, 3: 1, 4: 2}),
            lambda: self.reload({1: 1, 2: 1, 3: 1, 4: 1, v: 2}),
            self.flood,
            *graceful,
            lambda: self.drain_remove(4, 2),
            *kill9,
        ]
        for step in steps:
            # No change once the clients are about to stop: each must run
            # under traffic.
            if self.stop.is_set() or getattr(self, "sluice_gone", False) or now() - self.t0 > self.end_s:
                return
            step()
            self.pause(gap)

    # ---- the run
    def run(self):
        a = self.a
        out = lambda n: open(os.path.join(a.state, n), "w")  # noqa: E731
        for i in range(1, 5):
            self.spawn(f"b{i}", ["python3", f"{SCRIPTS}/lab_server.py", f"b{i}", BACKENDS[i].split(":")[0],
                                 "8080"], out(f"b{i}.log"))
        self.write_config()
        time.sleep(0.5)
        if self.start_sluice() is None:
            self.log("sluice did not start")
            return 1
        # Resolve the backends and the clients before the clock starts.
        for c in (1, 2):
            for _ in range(50):
                r = subprocess.run(["ip", "netns", "exec", self.ns(f"c{c}"), "python3", f"{SCRIPTS}/lab_client.py",
                                    VIP, "80", "6", "--timeout", "0.5"], capture_output=True, text=True)
                if '"errors": 0' in r.stdout:
                    break
                time.sleep(0.2)
        seconds = a.minutes * 60
        self.end_s = seconds - 8
        self.t0 = now()
        clients = []
        for c in (1, 2):
            clients.append(("pool", c, self.spawn(f"c{c}", ["python3", f"{SCRIPTS}/lab_pool.py", VIP, "80",
                                                            str(seconds), "--conns", "6", "--think", "0.2"],
                                                  out(f"pool-c{c}.jsonl"))))
            clients.append(("short", c, self.spawn(f"c{c}", ["python3", f"{SCRIPTS}/lab_short.py", VIP, "80",
                                                             str(seconds), "--gap", "0.02"],
                                                   out(f"short-c{c}.jsonl"))))
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        self.log(f"soak: {a.minutes} min, clients running")
        cycles = 0
        while now() - self.t0 < self.end_s and not self.stop.is_set():
            self.cycle(cycles)
            cycles += 1
            if getattr(self, "sluice_gone", False):
                break
        # Let the clients finish their time (they stop on their own).
        for _, _, p in clients:
            try:
                p.wait(timeout=max(5, seconds - (now() - self.t0) + 15))
            except subprocess.TimeoutExpired:
                p.kill()
        self.stop.set()
        sampler.join()
        # The last sample, after the clients stopped.
        return self.report(cycles, clients)

    def report(self, cycles, clients):
        a = self.a
        failures = []
        req = {}
        for kind, c, _ in clients:
            path = os.path.join(a.state, f"{kind}-c{c}.jsonl")
            done, retried, fatal = {}, {}, {}
            with open(path) as f:
                for line in f:
                    try:
                        j = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if j.get("done"):
                        done = j
                    elif kind == "pool" and "error" in j:
                        k = j["error"].split(":")[0]
                        fatal[k] = fatal.get(k, 0) + 1
                    elif kind == "pool" and j.get("retried"):
                        k = j.get("retry_error", "?").split(":")[0]
                        retried[k] = retried.get(k, 0) + 1
            if kind == "short":
                retried, fatal = done.get("retryable", {}), done.get("fatal", {})
            req[f"{kind}-c{c}"] = {"requests": done.get("requests"), "retried": retried, "fatal": fatal,
                                   "finished": bool(done)}
            if not done:
                failures.append(f"{kind}-c{c} did not finish")
            if fatal:
                failures.append(f"{kind}-c{c}: {sum(fatal.values())} requests failed that the client would not retry")
        rss = [s for s in self.samples if s["rss_kb"]]
        post = next((s for s in rss if s["t"] >= WARMUP_S), rss[-1] if rss else None)
        end = rss[-1] if rss else None
        mem = {}
        if rss:
            mem = {"start_kb": rss[0]["rss_kb"], "post_warmup_kb": post["rss_kb"], "post_warmup_t": post["t"],
                   "end_kb": end["rss_kb"], "max_kb": max(s["rss_kb"] for s in rss),
                   "bound_kb": int(post["rss_kb"] * RSS_FACTOR + RSS_SLACK_KB)}
            if end["rss_kb"] > mem["bound_kb"]:
                failures.append(f"RSS at the end {end['rss_kb']} kB over the bound {mem['bound_kb']} kB")
        if self.died:
            failures.append(f"sluice died unexpectedly: {self.died}")
        if getattr(self, "sluice_gone", False):
            failures.append("sluice was killed and not started again")
        lat = [c["ctl_ms"] for c in self.changes if c["ok"]]
        vis = [c["visible_ms"] for c in self.changes if c["visible_ms"] is not None]
        bad = [c["op"] for c in self.changes if not c["ok"]]
        if bad:
            failures.append(f"control changes refused: {bad}")

        def pct(xs, p):
            xs = sorted(xs)
            return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 1) if xs else None

        occ = [s for s in self.samples if s["flows"] is not None]
        summary = {
            "minutes": a.minutes, "cycles": cycles, "break": a.brk,
            "requests": req,
            "rss": mem,
            "occupancy": {"samples": len(occ), "min": min((s["flows"] for s in occ), default=None),
                          "median": statistics.median([s["flows"] for s in occ]) if occ else None,
                          "max": max((s["flows"] for s in occ), default=None),
                          "capacity": occ[-1]["capacity"] if occ else None,
                          "every_30s": [(s["t"], s["flows"]) for s in occ if int(s["t"]) % 30 < 2]},
            "control": {"changes": len(self.changes), "ctl_p50_ms": pct(lat, 50), "ctl_p99_ms": pct(lat, 99),
                        "ctl_max_ms": pct(lat, 100), "visible_p50_ms": pct(vis, 50),
                        "visible_p99_ms": pct(vis, 99)},
            "restarts": dict(self.restarts, ready_s=[round(r["down_to_ready_s"], 2) for r in self.restart_s]),
            "died_unexpectedly": self.died,
            "failures": failures,
            "verdict": "FAIL" if failures else "PASS",
        }
        with open(os.path.join(a.out, "samples.jsonl"), "w") as f:
            for s in self.samples:
                f.write(json.dumps(s) + "\n")
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        print_summary(summary)
        return 1 if failures else 0


def print_summary(s):
    print("\n== soak summary")
    print(f"{s['minutes']} min, {s['cycles']} cycles of operator changes" + (f", BREAK={s['break']}" if s["break"] else ""))
    print(f"{'client':<10}{'requests':>10}  retried (client retries)        failed (not retried)")
    for k, r in s["requests"].items():
        print(f"{k:<10}{str(r['requests']):>10}  {json.dumps(r['retried']):<32}{json.dumps(r['fatal'])}")
    m = s["rss"]
    if m:
        print(f"RSS kB: start {m['start_kb']}, post-warm-up {m['post_warmup_kb']} (at {m['post_warmup_t']} s), "
              f"end {m['end_kb']}, max {m['max_kb']}; bound {m['bound_kb']}")
    o = s["occupancy"]
    print(f"flow-table occupancy ({o['samples']} samples, capacity {o['capacity']}): min {o['min']}, "
          f"median {o['median']}, max {o['max']}; every 30 s: {o['every_30s']}")
    c = s["control"]
    print(f"control changes {c['changes']}: ctl returned p50 {c['ctl_p50_ms']} ms, p99 {c['ctl_p99_ms']} ms, "
          f"max {c['ctl_max_ms']} ms; visible in stats p50 {c['visible_p50_ms']} ms, p99 {c['visible_p99_ms']} ms")
    r = s["restarts"]
    print(f"restarts survived: {r['graceful']} graceful (SIGTERM + snapshot), {r['kill9']} kill -9; "
          f"signal -> ready s: {r['ready_s']}")
    for f in s["failures"]:
        print(f"FAIL: {f}")
    print(f"verdict: {s['verdict']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab", required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--no-restarts", action="store_true",
                   help="one sluice process for the whole run: the memory check then covers a long-lived process")
    p.add_argument("--break", dest="brk", choices=["remove-undrained", "no-restart"])
    a = p.parse_args()
    # soak.sh's cleanup sends SIGTERM: unwind through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    s = Soak(a)
    try:
        rc = s.run()
    finally:
        s.stop.set()
        if s.sluice is not None and s.sluice.poll() is None:
            s.sluice.terminate()
            try:
                s.sluice.wait(timeout=5)
            except subprocess.TimeoutExpired:
                s.sluice.kill()
        for q in s.procs:
            if q.poll() is None:
                q.kill()
    sys.exit(rc)


if __name__ == "__main__":
    main()

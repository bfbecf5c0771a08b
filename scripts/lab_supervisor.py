#!/usr/bin/env python3
"""A small stand-in for systemd around one sluice process, for the lab:
the parts of sd_notify(3) sluice uses (READY=1, and the file descriptor
store: FDSTORE=1, FDSTOREREMOVE=1, FDNAME=) and Restart=always.

    lab_supervisor.py [--restart-delay-ms N] [--pidfile FILE] [--no-store] -- CMD [ARGS...]

Runs CMD with NOTIFY_SOCKET set. Descriptors CMD stores are kept here;
when CMD exits (killed or not) it is started again after the delay with
them passed back as systemd does: from descriptor 3 on, LISTEN_FDS,
LISTEN_FDNAMES, LISTEN_PID. --no-store drops stored descriptors instead
(systemd without FileDescriptorStoreMax=). The child's pid is written to
--pidfile at each start. SIGTERM or SIGINT stops the child (SIGTERM) and
then the supervisor. Events are logged to stderr, one line each, with the
monotonic clock in seconds: "start PID", "exit PID STATUS", "ready PID",
"store NAME", "remove NAME".
"""
import argparse
import array
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time


def log(msg):
    print(f"{time.monotonic():.6f} {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restart-delay-ms", type=int, default=0)
    ap.add_argument("--pidfile")
    ap.add_argument("--no-store", action="store_true")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")

    tmp = tempfile.mkdtemp(prefix="sluice-supervisor-")
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    # The child's environment: ours, with the notify socket; LISTEN_* are
    # set in the child only (place() below), for what it is handed.
    os.environ["NOTIFY_SOCKET"] = path
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    stored = []  # (name, fd), in store order
    stopping = False

    def on_signal(_sig, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def spawn():
        # Stored descriptors go to 3.. in the child: first out of the way
        # (high numbers, close-on-exec), then into place after the fork.
        high = [fcntl_dupfd(fd) for _, fd in stored]
        names = ":".join(n for n, _ in stored)
        n = len(stored)

        def place():
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i, inheritable=True)
            if n:
                os.environ["LISTEN_PID"] = str(os.getpid())
                os.environ["LISTEN_FDS"] = str(n)
                os.environ["LISTEN_FDNAMES"] = names

        child = subprocess.Popen(cmd, preexec_fn=place, close_fds=False)
        for fd in high:
            os.close(fd)
        if args.pidfile:
            with open(args.pidfile + ".tmp", "w") as f:
                f.write(f"{child.pid}\n")
            os.replace(args.pidfile + ".tmp", args.pidfile)
        log(f"start {child.pid} fds={n}")
        return child

    def handle(data, fds, pid):
        fields = dict(
            line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line
        )
        name = fields.get("FDNAME", "stored")
        if fields.get("FDSTOREREMOVE") == "1":
            for i in reversed(range(len(stored))):
                if stored[i][0] == name:
                    os.close(stored[i][1])
                    del stored[i]
            log(f"remove {name}")
        if fields.get("FDSTORE") == "1" and not args.no_store:
            for fd in fds:
                stored.append((name, fd))
                log(f"store {name}")
            fds = []
        for fd in fds:
            os.close(fd)
        if fields.get("READY") == "1":
            log(f"ready {pid}")

    child = spawn()
    while True:
        r, _, _ = select.select([sock], [], [], 0.005)
        if r:
            fds = array.array("i")
            data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(64 * fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            for fd in fds:
                os.set_inheritable(fd, False)
            handle(data, list(fds), child.pid)
            continue
        if stopping:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            log(f"exit {child.pid} {child.returncode}")
            break
        status = child.poll()
        if status is not None:
            log(f"exit {child.pid} {status}")
            if args.restart_delay_ms:
                time.sleep(args.restart_delay_ms / 1000)
            if stopping:
                break
            child = spawn()
    for _, fd in stored:
        os.close(fd)
    sock.close()
    os.unlink(path)
    os.rmdir(tmp)


def fcntl_dupfd(fd):
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000)


if __name__ == "__main__":
    main()

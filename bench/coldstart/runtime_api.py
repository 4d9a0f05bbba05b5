#!/usr/bin/env python3
"""A local AWS Lambda Runtime API that measures a function's cold start.

    runtime_api.py [--runs N] [--cpu CORE] [--event FILE] [--json OUT] -- BINARY [ARGS...]

For each run it serves the Runtime API (2018-06-01: invocation/next, response, error,
init/error) on a fresh loopback port, starts BINARY pinned to one core (`taskset -c CORE`)
with AWS_LAMBDA_RUNTIME_API and the variables Lambda sets, and records:

- init: wall time from the start of the process to its first `GET invocation/next` (what
  Lambda bills as the init phase), and the CPU time the process used until then (the sum
  over its threads of /proc/PID/task/*/schedstat, in nanoseconds, read when that request
  arrives), and its resident memory (VmRSS) at that point;
- invoke: wall time from handing it the event (FILE, default `{}`) to its response;

then stops it (SIGKILL, as Lambda freezes and later drops an instance). The function's own
stdout and stderr go to /dev/null unless NEARCAST_COLDSTART_LOGS is set.

Prints one line per run and the medians; with --json appends one JSON object per run to OUT.
The environment of this script is passed on (so AWS_ENDPOINT_URL, NEARCAST_TABLE and the like
reach the function). Linux only (/proc, taskset). Standard library only.
"""

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

PREFIX = "/2018-06-01/runtime"


def cpu_ns(pid):
    """CPU time used so far by every thread of `pid`, in nanoseconds."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except FileNotFoundError:
        pass
    return total


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Run:
    def __init__(self, event):
        self.event = event
        self.t0 = None
        self.pid = None
        self.init_s = None
        self.init_cpu_ns = None
        self.init_rss_kib = None
        self.handed = None
        self.invoke_s = None
        self.status = None
        self.error = None
        self.request_id = str(uuid.uuid4())
        self.done = threading.Event()


def handler_for(run):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, status, body=b"", headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            if self.path != f"{PREFIX}/invocation/next":
                return self.reply(404)
            if run.init_s is None:
                run.init_s = time.perf_counter() - run.t0
                run.init_cpu_ns = cpu_ns(run.pid)
                run.init_rss_kib = rss_kib(run.pid)
                run.handed = time.perf_counter()
                deadline = int((time.time() + 30) * 1000)
                return self.reply(
                    200,
                    run.event,
                    [
                        ("Content-Type", "application/json"),
                        ("Lambda-Runtime-Aws-Request-Id", run.request_id),
                        ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                        (
                            "Lambda-Runtime-Invoked-Function-Arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:coldstart",
                        ),
                        ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
                    ],
                )
            # The second poll: the instance is idle. Hold it until the run is over.
            run.done.set()
            time.sleep(5)
            return self.reply(500)

        def do_POST(self):
            body = self.body()
            if self.path == f"{PREFIX}/invocation/{run.request_id}/response":
                run.invoke_s = time.perf_counter() - run.handed
                try:
                    run.status = json.loads(body).get("statusCode")
                except (ValueError, AttributeError):
                    run.status = None
                self.reply(202, b"{}")
                return
            if self.path.endswith("/error"):
                run.error = body.decode("utf-8", "replace")[:500]
                self.reply(202, b"{}")
                run.done.set()
                return
            self.reply(404)

    return Handler


def one_run(args, event):
    run = Run(event)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(run))
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "AWS_LAMBDA_FUNCTION_NAME": "coldstart",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/coldstart",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        }
    )
    logs = None if os.environ.get("NEARCAST_COLDSTART_LOGS") else subprocess.DEVNULL
    cmd = ["taskset", "-c", str(args.cpu)] + args.command
    run.t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=logs, stderr=logs)
    run.pid = proc.pid
    finished = run.done.wait(args.timeout)
    proc.kill()
    proc.wait()
    server.shutdown()
    server.server_close()
    if not finished:
        run.error = run.error or f"no answer within {args.timeout} s"
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--event", help="invocation payload (default: {})")
    p.add_argument("--label", default=None)
    p.add_argument("--json", help="append one JSON line per run to this file")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("give the binary to start after --")
    event = open(args.event, "rb").read() if args.event else b"{}"
    label = args.label or os.path.basename(args.command[0])
    runs = []
    for k in range(args.runs):
        r = one_run(args, event)
        if r.error is not None or r.init_s is None:
            print(f"{label} run {k + 1}: FAILED: {r.error}", file=sys.stderr)
            sys.exit(1)
        runs.append(r)
        print(
            f"{label} run {k + 1}: init {r.init_s * 1000:.1f} ms wall, "
            f"{r.init_cpu_ns / 1e6:.1f} ms cpu, rss {r.init_rss_kib / 1024:.1f} MiB; "
            f"first invoke {r.invoke_s * 1000:.1f} ms (status {r.status})"
        )
        if args.json:
            with open(args.json, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "label": label,
                            "init_ms": round(r.init_s * 1000, 2),
                            "init_cpu_ms": round(r.init_cpu_ns / 1e6, 2),
                            "init_rss_mib": round(r.init_rss_kib / 1024, 1),
                            "invoke_ms": round(r.invoke_s * 1000, 2),
                            "status": r.status,
                        }
                    )
                    + "\n"
                )
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(
        f"{label}: median of {len(runs)}: init {med([r.init_s for r in runs]) * 1000:.1f} ms wall, "
        f"{med([r.init_cpu_ns for r in runs]) / 1e6:.1f} ms cpu, "
        f"rss {med([r.init_rss_kib for r in runs]) / 1024:.1f} MiB; "
        f"first invoke {med([r.invoke_s for r in runs]) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

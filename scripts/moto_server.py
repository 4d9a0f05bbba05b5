"""moto's server, serving one request at a time.

moto's DynamoDB TransactWriteItems is not atomic across concurrent requests (it copies a
whole table and restores the copy when a condition fails, clobbering concurrent writes),
whereas DynamoDB's transactions are serialisable. Running requests one at a time restores
that guarantee, so concurrency tests exercise Nearcast's conditions, not moto's races.
Connections are still served by threads (clients keep connections alive).

With `--exit-with-stdin` the server exits when its standard input closes: a test process
that starts it keeps the pipe's write end, so the server ends with that process however it
ends (the kernel closes the pipe), with no cleanup code in the tests.
"""

import os
import sys
import threading

from moto import server

_run_simple = server.run_simple
_lock = threading.Lock()


def _serial(app):
    def wrapped(environ, start_response):
        # moto's own inspection API (/moto-api/data.json, which tests read) only reads, and
        # dumping every service's state can take seconds: it does not wait for the lock.
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return app(environ, start_response)
        with _lock:
            # Drain the body inside the lock: the work happens while it is produced.
            return list(app(environ, start_response))

    return wrapped


def run_simple(host, port, app, *args, **kwargs):
    return _run_simple(host, port, _serial(app), *args, **kwargs)


server.run_simple = run_simple


def _exit_with_stdin():
    def watch():
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="exit-with-stdin", daemon=True).start()


if __name__ == "__main__":
    if "--exit-with-stdin" in sys.argv:
        sys.argv.remove("--exit-with-stdin")
        _exit_with_stdin()
    sys.exit(server.main())

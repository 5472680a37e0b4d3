"""Ray starts its head's processes with fork() + exec (a preexec_fn). In a process where gRPC is busy
(Flower's simulation process talks to its SuperLink over gRPC), gRPC's fork handler restarts its
threads in the child, which can crash before exec: Ray then waits 30 s for a GCS server that never
started (CI failed on it twice in a row). `fedrouter.cli` sets GRPC_ENABLE_FORK_SUPPORT=0 before
anything imports gRPC; the test below runs the crash's recipe after importing it. (`died_before_exec("plain",
...)` runs it without the CLI: with GRPC_ENABLE_FORK_SUPPORT unset, 5 to 11 of 300 children died here.)"""

from __future__ import annotations

import os
import subprocess
import sys

# gRPC busy on two threads (unary calls to an in-process server) while the main thread starts
# children the way Ray does; prints how many children died before they could exec `true`
BUSY_FORKS = r"""
import subprocess, sys, threading
from concurrent import futures
if sys.argv[1] == "cli":
    import fedrouter.cli  # noqa: F401  (its environment defaults, before gRPC is imported)
import grpc

server = grpc.server(futures.ThreadPoolExecutor(4))
echo = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("svc", {"echo": echo}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
call = channel.unary_unary("/svc/echo")
stop = threading.Event()

def busy():
    while not stop.is_set():
        call(b"x" * 100)

threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
for t in threads:
    t.start()
died = sum(subprocess.Popen(["true"], preexec_fn=lambda: None).wait() != 0 for _ in range(int(sys.argv[2])))
print(died, flush=True)
# shut gRPC down before the interpreter does: with calls still in flight at exit, its server thread
# raised during teardown and the process hung there once (after printing its count)
stop.set()
for t in threads:
    t.join()
channel.close()
server.stop(None).wait()
"""


def died_before_exec(mode: str, forks: int, env: dict[str, str]) -> int:
    run = subprocess.run(
        [sys.executable, "-c", BUSY_FORKS, mode, str(forks)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout.split()[-1])


def test_the_cli_sets_the_variable_before_grpc_is_imported():
    probe = "import sys, os, fedrouter.cli; print('grpc' in sys.modules, os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert run.stdout.split() == ["False", "0"], run.stderr[-2000:]


def test_no_child_dies_before_exec_with_the_cli_defaults():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    # without the variable ~2% of these children die (5 to 11 of 300 here); with it, none
    assert died_before_exec("cli", 300, env) == 0

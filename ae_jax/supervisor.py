"""One process of a run over several processes, watched from outside: one line and a status when it ends badly.

A script started with ``--coordinator=...`` or ``--distributed`` does not train
in the process the user (or the scheduler) started: that process becomes a
small supervisor that starts the same command again as its one child, the
worker, which joins the other processes and trains. Why a second process: the
JAX runtime itself ends a worker when it loses the coordination service
(process 0 died or its host is gone, or the others never joined): from C++,
with an abort (exit status 134), a check-failure stack trace and several log
lines, at once and without any way for Python to step in (the installed jaxlib
takes a callback for this, but cannot hand it the error: it aborts on a
std::bad_cast instead). Only a process outside the worker can then say what
happened in one line and end with a documented status. Everything the worker
decides itself (a peer lost, a signal: ``ae_jax.trainer.distributed``) it
sends here as the one line to print.

The supervisor

* passes the worker's standard output through untouched, and its standard
  error line by line, except the log lines of the distributed runtime (and a
  C++ stack trace), which it holds back: they are dropped when the worker's end
  is explained by one line, and printed otherwise;
* forwards SIGINT and SIGTERM to the worker (which stops every process: see
  ``distributed``), so Ctrl-C reaches the worker exactly once (the worker runs
  in a session of its own, out of the terminal's reach);
* takes the worker with it when it is killed itself (the worker gets SIGKILL
  when its parent dies, on Linux; elsewhere the worker notices within a second);
* ends with the worker's status, or, when the worker was ended from outside
  or by the runtime, with one line and ``EXIT_LOST``.

It imports nothing of JAX: the messages come over a pipe (``report``).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

# The status of a run ended because a process was lost or never joined: EX_TEMPFAIL of sysexits.h ("a temporary
# failure; the user is invited to retry"): the run resumes from its last checkpoint when started again.
EXIT_LOST = 75
# A stop by signal, named and ended alike by every process (its status is the shell's 128 + the signal).
STOPS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
STOP_STATUS = {name: 128 + int(sig) for sig, name in STOPS.items()}
JOIN_TIMEOUT_S = 120.0  # default of --join-timeout: every process must have joined by then
WORKER_FD_ENV = "AE_JAX_SUPERVISOR_FD"  # the worker's end of the pipe to its supervisor (file descriptor)
FORWARD_GRACE_S = 30.0  # after a forwarded signal, for the worker to end itself before it is killed

# Log lines of the distributed runtime (absl format: "E1207 16:33:20.358561  10200 file.cc:1520] ...", or the older
# "2026-12-07 16:36:41.371557: F file.h:80] ..."), a C++ stack trace and the lines that go with them
_NATIVE = re.compile(r"^([EFWI]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EFWI] |"
                     r"\*\*\* Check failure stack trace|\s+@\s+0x|terminate called|\s+what\(\):|"
                     r"Additional GRPC error|:\{?\"?(UNKNOWN|created)|RPC: /|Barrier result|This suggests|"
                     r"The tasks have crashed|\[Gloo\].*(error|fail)|\d+$|$)")
_FATAL = "detected fatal errors"  # the runtime's own line before it aborts the process


def is_worker() -> bool:
    return WORKER_FD_ENV in os.environ


def report(kind: str, text: str = "") -> None:
    """Send the supervisor one message (nothing without one); ``text`` is one line."""
    fd = os.environ.get(WORKER_FD_ENV)
    if not fd:
        return
    try:
        os.write(int(fd), f"{kind} {text}".replace("\n", " ").strip().encode() + b"\n")
    except OSError:  # the supervisor is gone: nothing to tell
        pass


def single_host_command(script: str, argv: list[str]) -> str:
    """The command that resumes on one host: argv less the flags that join processes (and less --force)."""
    joined = ("--coordinator", "--num-processes", "--process-id", "--distributed", "--join-timeout", "--force")
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in joined:
            skip = "=" not in a and name not in ("--distributed", "--force")  # "--coordinator HOST:PORT"
            continue
        keep.append(a)
    return f"python experiments/{script} " + " ".join(shlex.quote(a) for a in keep)


def resume_hint(script: str, argv: list[str], explicit: bool, force: bool) -> str:
    """How to carry on after a process was lost: the same command everywhere, on fewer hosts, or on one."""
    same = "the same command without --force" if force else "the same command"
    fewer = ("on fewer hosts with --num-processes and each one's --process-id to match" if explicit
             else "on a slice or allocation of another size")
    return (f"rerun {same} on every host to go on ({fewer}), or on process 0's host alone: "
            f"{single_host_command(script, argv)}")


def lost_line(prog: str, lost: str, why: str, kept: str, resume: str) -> str:
    """The one line a process prints when the run stops because another process was lost."""
    return f"{prog}: error: lost {lost}: {why}; {kept}; {resume}"


NOTHING_KEPT = "no epoch was saved yet (a checkpoint comes every 5 epochs)"


class _Worker:
    """What the worker said so far (messages arrive on their own thread)."""

    def __init__(self):
        self.joined = False
        self.process = None  # (index, count) once joined
        self.kept = NOTHING_KEPT
        self.ending: tuple[int, str] | None = None  # the status and line the worker ends with
        self.lock = threading.Lock()

    def take(self, message: str) -> None:
        kind, _, text = message.partition(" ")
        with self.lock:
            if kind == "joined":
                self.joined = True
                index, count = text.split()
                self.process = int(index), int(count)
            elif kind == "kept":
                self.kept = text
            elif kind == "ending":
                status, _, line = text.partition(" ")
                self.ending = int(status), line


def supervise(script_path: str, argv: list[str], *, explicit: bool, process: tuple[int, int] | None,
              coordinator: str | None, join_timeout: float, force: bool) -> int:
    """Run ``python script_path argv`` as the worker of this process and end as described above."""
    script = os.path.basename(script_path)
    prog = script
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **{WORKER_FD_ENV: str(write_fd)})
    worker = subprocess.Popen([sys.executable, script_path, *argv], env=env, stderr=subprocess.PIPE,
                              pass_fds=(write_fd,), start_new_session=True, preexec_fn=_die_with_parent())
    os.close(write_fd)
    state = _Worker()
    held: list[str] = []

    def messages():
        with os.fdopen(read_fd, "r", errors="replace") as f:
            for line in f:
                state.take(line.rstrip("\n"))

    def errors():
        for raw in worker.stderr:
            line = raw.decode(errors="replace")
            with state.lock:
                if state.ending is not None:
                    continue  # the worker explains its end in one line: what comes with it goes
            if _NATIVE.match(line.rstrip("\n")):
                held.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    readers = [threading.Thread(target=messages, daemon=True), threading.Thread(target=errors, daemon=True)]
    for t in readers:
        t.start()

    forwarded: list[int] = []
    forwarded_at: list[float] = []

    def forward(signum, frame):
        forwarded.append(signum)
        forwarded_at.append(time.monotonic())
        try:
            worker.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                rc = worker.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if forwarded_at and time.monotonic() - forwarded_at[0] > FORWARD_GRACE_S:
                worker.kill()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    for t in readers:
        t.join(timeout=5)

    with state.lock:
        ending, joined, kept, proc = state.ending, state.joined, state.kept, state.process or process
    if ending is not None:
        status, line = ending
        print(line, file=sys.stderr, flush=True)
        return status
    if rc >= 0 and not _fatal(held):  # the worker's own end (0, a one-line error, a traceback): as it was
        sys.stderr.write("".join(held))
        return rc
    resume = resume_hint(script, argv, explicit, force)
    index, count = proc if proc is not None else (None, None)
    who = f"process {index} of {count}" if index is not None else "this process"
    if forwarded:
        name = STOPS.get(forwarded[0], "terminated")
        print(f"{name}: {kept}; {resume}", file=sys.stderr, flush=True)
        return STOP_STATUS[name]
    if not joined:
        missing = ("process 1" if count == 2 and index == 0 else
                   "process 0 (the coordinator)" if count == 2 else "every process")
        where = f" at {coordinator}" if coordinator else ""
        print(f"{prog}: error: {who}: {missing} did not join within {join_timeout:g} s{where} (--join-timeout); "
              f"start every process with the same command (each with its own --process-id), or check that "
              f"{coordinator or 'the coordinator'} can be reached from every host; {resume}",
              file=sys.stderr, flush=True)
        return EXIT_LOST
    if _fatal(held):  # the runtime ended the worker: it lost the coordination service or was told of a loss
        if index is not None and index != 0:
            lost, why = f"process 0 of {count} (the coordinator)", "it died, was preempted or cannot be reached"
        else:
            tasks = _unhealthy(held)
            lost = f"process {tasks}" if tasks else "another process"
            why = "it stopped sending heartbeats (it died, was preempted or hangs)"
        print(lost_line(prog, lost, why, kept, resume), file=sys.stderr, flush=True)
        return EXIT_LOST
    sig = -rc if rc < 0 else signal.SIGABRT
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    print(f"{prog}: error: {who} was ended by {name}; {kept}; {resume}", file=sys.stderr, flush=True)
    return 128 + sig


def _fatal(held: list[str]) -> bool:
    return any(_FATAL in line for line in held)


def _unhealthy(held: list[str]) -> str:
    """The task numbers the runtime names as lost ("Task 1 heartbeat timeout", "unhealthy ...:\\n1")."""
    text = "".join(held)
    found = re.findall(r"Task (\d+) heartbeat timeout", text)
    if not found:
        m = re.search(r"unhealthy \(stopped sending heartbeats\):\s*\n([\d,\s]+)", text)
        found = re.findall(r"\d+", m.group(1)) if m else []
    return ", ".join(dict.fromkeys(found))


def _die_with_parent():
    """A function for the worker to run before it starts: SIGKILL when the supervisor dies (Linux's
    PR_SET_PDEATHSIG), or None elsewhere. libc is loaded here, in the parent: between fork and exec the child
    must not import anything (another thread of the parent may have held the import lock at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1

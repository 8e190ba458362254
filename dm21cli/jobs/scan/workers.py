"""Scan points computed elsewhere: in worker processes of our own, or on a Dask cluster.

Each worker process is started with ``os.posix_spawn`` (SIGINT and SIGTERM
blocked until its handler is installed), takes one point at a time over a
pipe and ends when none is left; the scan's process reaps them.  On SIGINT
or SIGTERM every worker is told to stop: a busy one interrupts its point
(``status: interrupted``), idle ones end at once, and after WORKER_GRACE_S
the rest are killed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

from dm21cli.core.errors import ComputeError, InputError
from dm21cli.jobs.scan.plan import RESUME_HINT, ScanPoint, build_spec_from
from dm21cli.jobs.scan.records import (
    FINISHED,
    POINT_FILE,
    point_info,
    read_result,
    result_document_fields,
    store_point,
    result_fields,
)

#: seconds the worker processes of an interrupted scan get to mark their points and end
WORKER_GRACE_S = 5.0


def parallel_points(plan, pending, records, workers, checkpoints, progress) -> None:
    """Run `pending` points in `workers` processes of our own, each from its default guess.

    Each worker process (`_WorkerProcess`, running `_worker_main`) takes one
    point at a time over a pipe and answers with its result; a worker with
    no point left is told to end.  Any exception here, above all the
    KeyboardInterrupt of SIGINT/SIGTERM, stops the workers (`_stop_workers`:
    a busy one marks its point ``interrupted``, the others end; points that
    finish meanwhile are stored; whatever has not ended after
    `WORKER_GRACE_S` is killed) and then propagates.
    """
    from dm21cli.core import resources

    res = resources.resolve(plan.spec.resources.threads, plan.spec.memory_mb())
    workers = min(workers, len(pending))
    threads = max(1, res["threads"] // workers)
    # the budget is the whole scan's: this process keeps what it holds, the workers share the rest
    resources.release_freed_memory()  # (the reference point ran in this process)
    memory = int((res["memory_mb"] - resources.current_rss_mb()) // workers)
    _check_share(plan, pending[0], memory, workers, res, threads)
    progress.log(f"{len(pending)} points on {workers} worker processes, {threads} thread(s) and "
                 f"{memory} MB each")
    source = str(plan.spec.source_path) if plan.spec.source_path else None
    queue = list(pending)
    procs: list[_WorkerProcess] = []

    def store(proc: _WorkerProcess, reply: tuple) -> None:
        pt, t0 = proc.point, proc.started
        proc.point = None
        if reply[0] == "done":
            store_point(plan, pt, reply[1], reply[2], "default", records, progress, time.monotonic() - t0)

    def next_point(proc: _WorkerProcess) -> None:
        if not queue:
            proc.close_tasks()  # nothing left: the worker ends
            return
        pt = queue.pop(0)
        data = json.loads(json.dumps(pt.data))
        data["resources"] = {"threads": threads, "memory": memory}
        proc.give(pt, (data, source, plan.spec.job.name, pt.label, checkpoints, point_info(pt, "default")))
        progress.log(f"{pt.label}: computing in worker process {proc.slot} (pid {proc.pid})")

    def start(slot: int) -> None:
        proc = _WorkerProcess(slot)
        procs.append(proc)  # before the process exists: its pipes are closed whatever happens
        proc.start()

    try:
        for slot in range(1, workers + 1):
            start(slot)
        while any(p.alive for p in procs):
            for proc in _ready(procs, None):
                reply = proc.receive()
                if reply is None:  # the process ended
                    why = proc.reap()
                    if proc.stopped_by_signal() and (proc.point is not None or not proc.was_ready):
                        raise KeyboardInterrupt(f"worker process {proc.slot} {why}")
                    if not proc.was_ready:
                        raise ComputeError(f"worker process {proc.slot} could not start ({why})")
                    if proc.point is not None:  # killed (out of memory?) or crashed: the point failed
                        store(proc, ("done", None, f"worker process {proc.slot} {why} during the point"))
                        if queue:
                            start(proc.slot)
                elif reply[0] == "ready":
                    next_point(proc)
                elif reply[0] == "raise":
                    raise reply[1]
                elif reply[0] == "interrupted":  # the worker itself got SIGINT/SIGTERM
                    raise KeyboardInterrupt(f"worker process {proc.slot} was interrupted")
                else:
                    store(proc, reply)
                    next_point(proc)
    except BaseException:
        _stop_workers(procs, store)
        raise
    finally:
        for proc in procs:
            proc.close()


def _check_share(plan, pt: ScanPoint, memory_mb: int, workers: int, res: dict,
                 threads: int) -> None:
    """Refuse (ResourceError, exit 6) worker shares too small for a point, before any starts.

    A worker process is a fresh dm21 process: the estimate (`dm21cli.jobs.memory.estimate`,
    the numbers `dm21 validate` prints for the point) counts one (`memory.PROCESS_MB`).
    """
    from dm21cli.core.errors import ResourceError
    from dm21cli.jobs import memory
    from dm21cli.jobs.build import build_molecule

    spec = build_spec_from(pt.data, plan.spec.source_path, plan.spec.job.name, {}, pt.label)
    need = memory.estimate(spec, build_molecule(spec), threads)
    if memory_mb < need["minimum_mb"]:
        raise ResourceError(
            f"{workers} worker processes would get {max(memory_mb, 0):,} MB each of the "
            f"{res['memory_mb']:,} MB budget ({res['memory_source']}), but a point "
            f"{memory.describe(need)}; use fewer --workers or more --memory")


def _ready(procs: list, timeout: float | None) -> list:
    """The live worker processes with a reply (or their end) to read."""
    from multiprocessing.connection import wait

    by_conn = {p.results: p for p in procs if p.alive}
    return [by_conn[c] for c in wait(list(by_conn), timeout)] if by_conn else []


def _stop_workers(procs: list, store) -> None:
    """End every worker process within about `WORKER_GRACE_S` seconds, whatever happens.

    SIGTERM to each: a busy worker raises KeyboardInterrupt inside run_job
    (which writes ``status: interrupted``, or the point's result if it had
    finished) and answers; an idle or starting one ends at once (a starting
    one has SIGTERM blocked until its handler is in place, so it is not
    lost).  Finished points that arrive meanwhile go to `store`.  After the
    grace time, or at once on another SIGINT/SIGTERM here, the rest are
    killed (SIGKILL); their points stay unfinished (``.running``) and are
    recomputed by the next run.
    """
    import signal

    for proc in procs:
        proc.close_tasks()
        proc.kill(signal.SIGTERM)
    deadline = time.monotonic() + WORKER_GRACE_S
    while any(p.alive for p in procs):
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for proc in procs:
                    proc.kill(signal.SIGKILL)
                for proc in procs:
                    proc.reap(timeout=5.0)
                return
            for proc in _ready(procs, min(remaining, 0.5)):
                reply = proc.receive()
                if reply is None:
                    proc.reap(timeout=5.0)
                elif reply[0] == "done":
                    store(proc, reply)
        except KeyboardInterrupt:
            deadline = 0.0  # a second signal: do not wait any longer


class _WorkerProcess:
    """One worker process of `parallel_points`, as seen from the scan's process.

    Started with ``os.posix_spawn`` (a fresh Python running `_worker_main`,
    SIGINT and SIGTERM blocked until the worker's own handler is installed),
    in the scan's process group, talking over two pipes: tasks in, replies
    out (pickled by multiprocessing's Connection).  The scan reaps it itself,
    so its pid is never signalled after it has been reused.
    """

    def __init__(self, slot: int):
        from multiprocessing.connection import Connection

        self.slot = slot
        self.pid: int | None = None
        self.point: ScanPoint | None = None
        self.started = 0.0
        self.was_ready = False
        self.alive = True  # until its end has been seen (end of the reply pipe)
        self.returncode: int | None = None  # -N: killed by signal N
        task_r, task_w = os.pipe()
        self.tasks = Connection(task_w, readable=False)
        self._child_fds = [task_r]
        reply_r, reply_w = os.pipe()
        self.results = Connection(reply_r, writable=False)
        self._child_fds.append(reply_w)

    def start(self) -> None:
        import signal
        import sys

        task_r, reply_w = self._child_fds
        code = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
                "from dm21cli.jobs.scan.workers import _worker_main; "
                "sys.exit(_worker_main(*map(int, sys.argv[2:])))")
        try:
            for fd in self._child_fds:  # only for this spawn (other workers must not hold them)
                os.set_inheritable(fd, True)
            self.pid = os.posix_spawn(
                sys.executable, [sys.executable, "-c", code, json.dumps([str(p) for p in sys.path]), str(task_r), str(reply_w),
                                 str(os.getpid())],
                os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                setsigmask={signal.SIGINT, signal.SIGTERM})
        finally:
            self._close_child_fds()

    def _close_child_fds(self) -> None:
        while self._child_fds:
            with contextlib.suppress(OSError):
                os.close(self._child_fds.pop())

    def give(self, pt: ScanPoint, task: tuple) -> None:
        self.point, self.started = pt, time.monotonic()
        with contextlib.suppress(OSError):  # it has just died: its end shows on the reply pipe
            self.tasks.send(task)

    def receive(self) -> tuple | None:
        """The next reply; None once the process has ended (its reply pipe closed)."""
        try:
            reply = self.results.recv()
        except (EOFError, OSError):
            self.alive = False
            return None
        if reply[0] == "ready":
            self.was_ready = True
            self.pid = self.pid or reply[1]
        return reply

    def close_tasks(self) -> None:
        """No more points: the worker ends once it has read everything sent."""
        with contextlib.suppress(OSError):
            self.tasks.close()

    def kill(self, signum: int) -> None:
        if self.pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def reap(self, timeout: float = 5.0) -> str:
        """Wait (at most `timeout` s) for the process to end; says how it ended."""
        self.alive = False
        deadline = time.monotonic() + timeout
        while self.pid is not None and self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                return "still running"
            time.sleep(0.01)
        code = self.returncode
        if code is None:
            return "ended"
        if code < 0:
            import signal

            return f"killed by signal {signal.Signals(-code).name}"
        return f"ended with exit status {code}"

    def stopped_by_signal(self) -> bool:
        """Ended by SIGINT or SIGTERM (directly, or in its handler: exit status 128 + N)."""
        import signal

        stops = (signal.SIGINT, signal.SIGTERM)
        return self.returncode is not None and (-self.returncode in stops
                                                or self.returncode - 128 in stops)

    def close(self) -> None:
        self._close_child_fds()
        for conn in (self.tasks, self.results):
            with contextlib.suppress(OSError):
                conn.close()


def _store_finished(plan, futures: dict, finished, records, progress, who: str) -> None:
    """Store each point as its Dask future finishes (futures: future -> (point, start time)).

    finished: the as-completed iterator; who names the workers in the
    KeyboardInterrupt raised when one of them was interrupted.
    """
    for future in finished:
        pt, t0 = futures[future]
        result, error = future.result()
        if error == "interrupted":
            raise KeyboardInterrupt(f"{who} was interrupted")
        store_point(plan, pt, result, error, "default", records, progress, time.perf_counter() - t0)


def dask_points(plan, pending, records, address, checkpoints, progress) -> None:
    """Send `pending` points to the Dask scheduler at `address`; each from its default guess."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("needs the 'distributed' package: pip install 'dask[distributed]'",
                         field="--dask") from None
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot connect to the Dask scheduler at {address}: {exc}",
                         field="--dask") from None
    futures: dict = {}
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        progress.log(f"{len(pending)} points on the Dask scheduler {address} ({workers} workers)")
        source = str(plan.spec.source_path) if plan.spec.source_path else None
        chk = str(Path(checkpoints).absolute()) if checkpoints else None
        for pt in pending:
            data = json.loads(json.dumps(pt.data))
            data["job"]["output_dir"] = str(pt.directory.absolute())  # workers have their own cwd
            future = client.submit(_worker_run, data, source, plan.spec.job.name, pt.label, chk, False,
                                   point_info(pt, "default"), pure=False,
                                   key=f"dm21-scan-{pt.functional}-{pt.index}-{pt.hash[:16]}")
            futures[future] = (pt, time.perf_counter())
        _store_finished(plan, futures, as_completed(list(futures)), records, progress, "a Dask worker")
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close()


#: a worker process's state, for its signal handler (see `_worker_main`)
_WORKER = {"idle": True, "stop": 0, "interrupted": False}


class _WorkerStop(BaseException):
    """SIGINT/SIGTERM in an idle worker process: it ends."""


def _inside_run_job(frame) -> bool:
    """Whether `frame` is inside run_job, or run_opt (a relaxed scan's point)."""
    import sys

    # (no import in a signal handler)
    codes = {module.__dict__[name].__code__ for module, name in
             ((sys.modules.get("dm21cli.jobs.run"), "run_job"),
              (sys.modules.get("dm21cli.jobs.opt"), "run_opt")) if module is not None}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _worker_signal(signum, frame) -> None:
    """SIGINT/SIGTERM in a worker process.

    Idle: the worker ends.  Busy: the first signal raises KeyboardInterrupt if
    it lands inside run_job (which then marks the point ``interrupted``);
    one landing outside it (the point not yet started, or finished and being
    reported) only asks the worker to end after the point (`_worker_check`
    raises it at run_job's first log line).  Further signals change nothing:
    they must not break the writing of the interrupted status.
    """
    _WORKER["stop"] = _WORKER["stop"] or signum
    if _WORKER["idle"]:
        raise _WorkerStop
    if not _WORKER["interrupted"] and _inside_run_job(frame):
        _WORKER["interrupted"] = True
        raise KeyboardInterrupt(f"terminated by signal {signum}")


def _worker_check(message: str) -> None:
    """Reporter of run_job in a worker process: a stop asked before run_job began takes effect."""
    if _WORKER["stop"] and not _WORKER["interrupted"]:
        _WORKER["interrupted"] = True
        raise KeyboardInterrupt(f"terminated by signal {_WORKER['stop']}")


def _worker_main(task_fd: int, reply_fd: int, scan_pid: int) -> int:
    """A worker process of `parallel_points`: points from `task_fd`, replies to `reply_fd`.

    Replies: ("ready", pid) once; then per point ("done", result, error)
    or ("interrupted",), or ("raise", exception) for an error that stops
    the scan.  Ends at the end of the task pipe, or on SIGINT/SIGTERM
    (exit status 128 + the signal).  The process starts with both signals
    blocked; they are unblocked once the handler is in place, so a signal
    that arrived while Python was starting is handled now.  A signal the
    scan's process ignores (SIG_IGN is inherited) stays ignored.  If the
    scan's process `scan_pid` dies (SIGKILL), the worker sends itself
    SIGTERM within a second: its point is marked interrupted, not computed
    on for nobody.
    """
    import signal
    import threading
    from multiprocessing.connection import Connection

    def watch_scan_process() -> None:
        while os.getppid() == scan_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    tasks = Connection(task_fd, writable=False)
    replies = Connection(reply_fd, readable=False)
    stops = {signal.SIGINT, signal.SIGTERM}
    try:
        for signum in stops:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, _worker_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        threading.Thread(target=watch_scan_process, name="dm21-scan-watch", daemon=True).start()
        replies.send(("ready", os.getpid()))
        while not _WORKER["stop"]:
            try:
                task = tasks.recv()
            except EOFError:
                return 0
            _WORKER["idle"] = False
            replies.send(_worker_task(task))
            _WORKER["idle"] = True
    except _WorkerStop:
        pass
    except (BrokenPipeError, EOFError):  # the scan's process has gone
        return 1
    return 128 + int(_WORKER["stop"])


def _worker_task(task: tuple) -> tuple:
    data, source, default_name, label, checkpoints, point_file = task
    if _WORKER["stop"]:
        return ("interrupted",)
    try:
        result, error = _worker_run(data, source, default_name, label, checkpoints,
                                    point_file=point_file, reporter=_worker_check)
    except Exception as exc:  # noqa: BLE001 - sent to the scan's process, which raises it
        import pickle

        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001
            exc = ComputeError(f"{label}: {exc.__class__.__name__}: {exc}")
        return ("raise", exc)
    return ("interrupted",) if error == "interrupted" else ("done", result, error)


def _worker_run(data: dict, source: str | None, default_name: str, label: str, checkpoints,
                quiet_stdout: bool = True, point_file: dict | None = None, reporter=None):
    """One point in a worker: (result dict or None, error message or None).

    (None, "interrupted") if it was interrupted before it finished.
    point_file: the point's `POINT_FILE` (without status), written as soon
    as the point has finished, so that it is kept even if the scan's process
    never hears of it.  reporter: run_job's reporter.
    """
    from dm21cli.core.errors import Interrupted
    from dm21cli.jobs.task import run_task

    spec = build_spec_from(data, Path(source) if source else None, default_name, {}, label)
    began = [False]  # run_job logged a line: the point directory is this run's (an old one moved aside)

    def report(message: str) -> None:
        began[0] = True
        if reporter is not None:
            reporter(message)

    try:
        # (not in Dask's threaded workers: redirect_stdout is process-wide)
        with contextlib.redirect_stdout(io.StringIO()) if quiet_stdout else contextlib.nullcontext():
            result = result_document_fields(run_task(spec, checkpoints=checkpoints, overwrite=True,
                                             reporter=report, interrupted_hint=RESUME_HINT))
            error = None
    except ComputeError as exc:
        result, error = read_result(spec.output_path() / "result.json"), str(exc)
    except (KeyboardInterrupt, Interrupted):
        # interrupted after run_job had finished the point (on its way out): keep the point
        result = read_result(spec.output_path() / "result.json") if began[0] else None
        if not result or result_fields(result)["status"] not in FINISHED or \
                (spec.output_path() / ".running").exists():
            return None, "interrupted"
        error = None
    if point_file is not None:
        from dm21cli.io.outputs.atomic import write_json_atomic

        status = "failed" if error is not None else result_fields(result)["status"] or "failed"
        write_json_atomic(spec.output_path() / POINT_FILE, {**point_file, "status": status})
    return result, error

"""A Lambda runtime executor that runs a function's ``bootstrap`` as a host process.

LocalStack's own executor starts a Docker container with its Go init inside. Here there is no
Docker, so this executor plays the init's part: it serves the Lambda Runtime API on a loopback
port, starts ``bootstrap`` (a ``provided.al2023`` custom runtime, e.g. built by cargo-lambda) from
the unzipped code with the environment Lambda gives it, hands it one invocation at a time, enforces
the function's timeout (killing and later restarting the process), and on stop leaves no process
behind (each bootstrap runs in its own process group).

Chosen with ``LAMBDA_RUNTIME_EXECUTOR=host``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from localstack import config
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import RuntimeExecutor

LOG = logging.getLogger(__name__)

API_PREFIX = "/2018-06-01/runtime"
STARTUP_TIMEOUT_SECONDS = 30
LOG_LIMIT_BYTES = 256 * 1024


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    function_arn: str
    trace_id: str
    deadline_ms: int
    done: threading.Event = field(default_factory=threading.Event)
    result: bytes | None = None
    is_error: bool = False


class RuntimeApi:
    """The Lambda Runtime API for one process: ``next``, ``response``, ``error``, ``init/error``."""

    def __init__(self):
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.current: dict[str, Invocation] = {}
        self.ready = threading.Event()
        self.init_error: bytes | None = None
        self.closed = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
                LOG.debug("runtime api: " + format, *args)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path != f"{API_PREFIX}/invocation/next":
                    return self._reply(HTTPStatus.NOT_FOUND)
                api.ready.set()
                while not api.closed.is_set():
                    try:
                        invocation = api.pending.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    api.current[invocation.request_id] = invocation
                    return self._reply(
                        HTTPStatus.OK,
                        invocation.payload,
                        {
                            "Content-Type": "application/json",
                            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                            "Lambda-Runtime-Trace-Id": invocation.trace_id,
                        },
                    )
                return self._reply(HTTPStatus.GONE)

            def do_POST(self):  # noqa: N802
                body = self._body()
                parts = self.path[len(API_PREFIX) :].strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_error = body or b'{"errorMessage":"init failed"}'
                    return self._reply(HTTPStatus.ACCEPTED)
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    invocation = api.current.pop(parts[1], None)
                    if invocation is None:
                        return self._reply(HTTPStatus.BAD_REQUEST, b'{"errorMessage":"unknown request id"}')
                    invocation.result = body
                    invocation.is_error = parts[2] == "error"
                    invocation.done.set()
                    return self._reply(HTTPStatus.ACCEPTED)
                return self._reply(HTTPStatus.NOT_FOUND)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="lambda-runtime-api", daemon=True)
        self.thread.start()

    def close(self):
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


class HostRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:  # noqa: A002
        super().__init__(id=id, function_version=function_version)
        self.api: RuntimeApi | None = None
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.logs = bytearray()
        self.logs_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, env_vars: dict[str, str]) -> None:
        self.env = {name: str(value) for name, value in env_vars.items()}
        self._spawn()

    def _code_dir(self) -> str:
        code = self.function_version.config.code
        # Idempotent; an updated function's new code may not be unpacked yet.
        code.prepare_for_execution()
        return str(code.get_unzipped_code_location())

    def _spawn(self) -> None:
        code_dir = self._code_dir()
        bootstrap = os.path.join(code_dir, "bootstrap")
        if not os.path.isfile(bootstrap):
            raise RuntimeError(f"the function's code has no bootstrap executable at its root ({code_dir})")
        os.chmod(bootstrap, 0o755)
        self.api = RuntimeApi()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **self.env}
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{self.api.port}"
        env["LAMBDA_TASK_ROOT"] = code_dir
        env["_HANDLER"] = env.get("_HANDLER", "bootstrap")
        self.process = subprocess.Popen(
            [bootstrap],
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._collect_logs, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self.api.ready.wait(0.05):
            if self.api.init_error is not None or self.process.poll() is not None or time.monotonic() > deadline:
                reason = (self.api.init_error or b"").decode(errors="replace")
                code = self.process.poll()
                self._terminate()
                raise RuntimeError(f"bootstrap did not become ready (exit code {code}): {reason} {self.get_logs()[-2000:]}")

    def _collect_logs(self, process: subprocess.Popen) -> None:
        for line in iter(process.stdout.readline, b""):
            with self.logs_lock:
                self.logs.extend(line)
                if len(self.logs) > LOG_LIMIT_BYTES:
                    del self.logs[: len(self.logs) - LOG_LIMIT_BYTES]
            LOG.debug("[%s] %s", self.function_version.id.function_name, line.decode(errors="replace").rstrip())

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=2)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=5)
        if self.api is not None:
            self.api.close()
            self.api = None

    def stop(self) -> None:
        self._terminate()

    # -- invocations ---------------------------------------------------------------------------

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if self.process is None or self.process.poll() is not None:
            LOG.info("restarting the bootstrap of %s", self.function_version.id.function_name)
            self._terminate()
            self._spawn()
        timeout = float(self.function_version.config.timeout or 3)
        invocation = Invocation(
            request_id=payload["invoke-id"],
            payload=(payload.get("payload") or "").encode(),
            function_arn=payload.get("invoked-function-arn", ""),
            trace_id=payload.get("trace-id", ""),
            deadline_ms=int((time.time() + timeout) * 1000),
        )
        with self.logs_lock:
            self.logs.clear()
        self.api.pending.put(invocation)
        deadline = time.monotonic() + timeout
        while not invocation.done.wait(0.05):
            if self.process is None or self.process.poll() is not None:
                return self._error(invocation, "Runtime.ExitError", "the bootstrap process exited during the invocation")
            if time.monotonic() > deadline:
                # Lambda ends the environment of a timed-out invocation; the next one starts afresh.
                self._terminate()
                return self._error(invocation, "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
        return InvocationResult(
            request_id=invocation.request_id,
            payload=invocation.result,
            is_error=invocation.is_error,
            logs=self.get_logs(),
        )

    def _error(self, invocation: Invocation, error_type: str, message: str) -> InvocationResult:
        body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
        return InvocationResult(request_id=invocation.request_id, payload=body, is_error=True, logs=self.get_logs())

    # -- addresses and logs ----------------------------------------------------------------------

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        return f"http://127.0.0.1:{config.GATEWAY_LISTEN[0].port}/_localstack_lambda/{self.id}"

    def get_logs(self) -> str:
        with self.logs_lock:
            return self.logs.decode(errors="replace")

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        if function_version.config.code:
            function_version.config.code.destroy_cached()

    @classmethod
    def validate_environment(cls) -> bool:
        return True

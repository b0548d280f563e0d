"""The host Lambda executor, through the real Lambda API. The function under test is a test
double: a small Python ``bootstrap`` speaking the Lambda Runtime API, which echoes its event and
environment, sleeps when asked, and exits when asked."""

import io
import json
import subprocess
import time
import uuid
import zipfile

import pytest

BOOTSTRAP = r'''#!/usr/bin/env python3
# reanimate-test-bootstrap
import json, os, sys, time, urllib.request
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(f"http://{api}/2018-06-01/runtime/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = r.headers["Lambda-Runtime-Deadline-Ms"]
        event = json.loads(r.read() or b"null")
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    if isinstance(event, dict) and event.get("exit"):
        sys.exit(3)
    names = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_ENDPOINT_URL", "GREETING", "AWS_REGION"]
    env = {n: os.environ.get(n) for n in names}
    body = json.dumps({"echo": event, "deadline": deadline, "env": env, "pid": os.getpid()})
    urllib.request.urlopen(urllib.request.Request(
        f"http://{api}/2018-06-01/runtime/invocation/{rid}/response", data=body.encode(), method="POST"))
'''


def zipped_bootstrap() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, BOOTSTRAP)
    return buffer.getvalue()


def bootstrap_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-f", "-a", "bootstrap"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line and "/bootstrap" in line]


@pytest.fixture
def function(client):
    lam = client("lambda")
    name = f"echo-{uuid.uuid4().hex[:8]}"
    lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Handler="bootstrap",
        Role="arn:aws:iam::000000000000:role/lambda",
        Code={"ZipFile": zipped_bootstrap()},
        Timeout=2,
        Environment={"Variables": {"GREETING": "hello"}},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    yield lam, name
    lam.delete_function(FunctionName=name)


def invoke(lam, name, event):
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return response, json.loads(response["Payload"].read() or b"null")


def test_runs_the_bootstrap_as_a_host_process_with_lambdas_environment(function):
    lam, name = function
    response, body = invoke(lam, name, {"n": 1})
    assert "FunctionError" not in response, body
    assert body["echo"] == {"n": 1}
    assert body["env"]["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert body["env"]["GREETING"] == "hello"
    assert body["env"]["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert int(body["deadline"]) > time.time() * 1000
    # A warm environment serves the next invocation too.
    _, again = invoke(lam, name, {"n": 2})
    assert again["echo"] == {"n": 2}


def test_concurrent_invocations_run_in_separate_processes(function):
    from concurrent.futures import ThreadPoolExecutor

    lam, name = function
    invoke(lam, name, {"warm": True})
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda n: invoke(lam, name, {"sleep": 1, "n": n})[1], range(3)))
    elapsed = time.monotonic() - started
    assert sorted(r["echo"]["n"] for r in results) == [0, 1, 2]
    assert len({r["pid"] for r in results}) == 3, "each concurrent invocation gets its own environment"
    assert elapsed < 2.9, f"three 1 s invocations took {elapsed:.1f} s: they ran one after another"


def test_the_function_timeout_is_enforced_and_the_environment_recovers(function):
    lam, name = function
    started = time.monotonic()
    response, body = invoke(lam, name, {"sleep": 30})
    assert time.monotonic() - started < 20, "the 2 s timeout was not enforced"
    assert response.get("FunctionError"), body
    assert "timed out" in json.dumps(body).lower(), body
    _, after = invoke(lam, name, {"n": 3})
    assert after["echo"] == {"n": 3}


def test_a_crashing_bootstrap_is_an_error_and_is_restarted(function):
    lam, name = function
    response, body = invoke(lam, name, {"exit": True})
    assert response.get("FunctionError"), body
    _, after = invoke(lam, name, {"n": 4})
    assert after["echo"] == {"n": 4}


def test_deleting_the_function_leaves_no_process_behind(function):
    lam, name = function
    invoke(lam, name, {"n": 5})
    assert any("reanimate" in p or "bootstrap" in p for p in bootstrap_processes())
    lam.delete_function(FunctionName=name)
    deadline = time.monotonic() + 20
    while [p for p in bootstrap_processes() if name in p or "lambda" in p]:
        assert time.monotonic() < deadline, bootstrap_processes()
        time.sleep(0.5)
    lam.create_function(  # so the fixture's delete succeeds
        FunctionName=name,
        Runtime="provided.al2023",
        Handler="bootstrap",
        Role="arn:aws:iam::000000000000:role/lambda",
        Code={"ZipFile": zipped_bootstrap()},
    )

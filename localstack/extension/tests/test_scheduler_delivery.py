"""Scheduler delivery through the real APIs: schedules created with the Scheduler API arrive in
their SQS targets."""

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest


@pytest.fixture
def setup(client):
    sqs, scheduler = client("sqs"), client("scheduler")
    name = f"timers-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    scheduler.create_schedule_group(Name=name)
    yield sqs, scheduler, url, arn, name
    sqs.delete_queue(QueueUrl=url)


def at(seconds_from_now: float) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


def create(scheduler, group, arn, name, expression, body, **extra):
    scheduler.create_schedule(
        Name=name,
        GroupName=group,
        ScheduleExpression=expression,
        FlexibleTimeWindow=extra.pop("window", {"Mode": "OFF"}),
        Target={"Arn": arn, "RoleArn": "arn:aws:iam::000000000000:role/scheduler", "Input": json.dumps(body)},
        **extra,
    )


def receive(sqs, url, wait_seconds: float):
    deadline = time.monotonic() + wait_seconds
    got = []
    while time.monotonic() < deadline:
        out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        got += [json.loads(m["Body"]) for m in out.get("Messages", [])]
        if got:
            return got
    return got


def test_a_one_time_schedule_fires_its_input_to_the_queue_on_time_and_deletes_itself(setup):
    sqs, scheduler, url, arn, group = setup
    create(scheduler, group, arn, "soon", at(2), {"n": 1}, ActionAfterCompletion="DELETE")
    started = time.monotonic()
    got = receive(sqs, url, 15)
    assert got == [{"n": 1}]
    assert time.monotonic() - started < 5, "fired more than a few seconds late"
    deadline = time.monotonic() + 5
    while scheduler.list_schedules(GroupName=group)["Schedules"]:
        assert time.monotonic() < deadline, "ActionAfterCompletion=DELETE did not delete it"
        time.sleep(0.25)


def test_without_delete_it_stays_and_does_not_fire_again(setup):
    sqs, scheduler, url, arn, group = setup
    create(scheduler, group, arn, "keep", at(1), {"n": 2}, ActionAfterCompletion="NONE")
    assert receive(sqs, url, 15) == [{"n": 2}]
    assert receive(sqs, url, 3) == []
    assert [s["Name"] for s in scheduler.list_schedules(GroupName=group)["Schedules"]] == ["keep"]


def test_a_disabled_or_deleted_schedule_does_not_fire(setup):
    sqs, scheduler, url, arn, group = setup
    create(scheduler, group, arn, "off", at(1), {"n": 3}, State="DISABLED")
    create(scheduler, group, arn, "gone", at(2), {"n": 4})
    scheduler.delete_schedule(Name="gone", GroupName=group)
    assert receive(sqs, url, 5) == []


def test_a_flexible_window_fires_inside_the_window(setup):
    sqs, scheduler, url, arn, group = setup
    # One minute, scaled by REANIMATE_SCHEDULER_FLEX_SCALE (0.05 under localstack/stack): 3 s.
    create(scheduler, group, arn, "flex", at(1), {"n": 5}, window={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 1})
    assert receive(sqs, url, 15) == [{"n": 5}]


def test_context_attributes_in_the_input_are_filled_in_per_firing(setup):
    sqs, scheduler, url, arn, group = setup
    body = {"id": "timer:t1@<aws.scheduler.scheduled-time>", "attempt": "<aws.scheduler.attempt-number>"}
    create(scheduler, group, arn, "ctx", at(1), body)
    got = receive(sqs, url, 15)
    assert len(got) == 1
    assert got[0]["attempt"] == "1"
    stamp = got[0]["id"].removeprefix("timer:t1@")
    fired = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs((fired - datetime.now(timezone.utc)).total_seconds()) < 30, stamp

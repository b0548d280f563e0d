"""EventBridge Scheduler that delivers. LocalStack's provider (moto) stores schedules but never
fires them; this provider adds a loop that fires each enabled schedule when due (checked every
quarter second) to its SQS target with the target's ``Input`` (or invokes its Lambda target,
asynchronously, with the ``Input`` as the event), retries a failed delivery with
backoff within the target's retry policy (then to its dead-letter queue, if any), deletes a
one-time schedule after it fired when ``ActionAfterCompletion`` is ``DELETE``, and honours flexible
windows by firing at a random point inside the window (scaled by
``REANIMATE_SCHEDULER_FLEX_SCALE`` for tests).

Chosen with ``PROVIDER_OVERRIDE_SCHEDULER=reanimate``."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from datetime import datetime, timezone

from localstack.services.scheduler.provider import SchedulerProvider

from reanimate_localstack.schedules import Unsupported, is_one_time, next_fire, utc

LOG = logging.getLogger(__name__)
TICK_SECONDS = 0.25


class Delivery:
    """What the loop knows of one schedule (keyed by ARN and last modification)."""

    def __init__(self, due: float | None):
        self.due = due
        self.fired_at: float | None = None
        self.attempts = 0
        self.first_attempt: float | None = None


def _with_context(body: str, schedule, delivery) -> str:
    """Fills in Scheduler's context attributes, as AWS does for templated targets' input."""
    scheduled = datetime.fromtimestamp(delivery.due, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        body.replace("<aws.scheduler.scheduled-time>", scheduled)
        .replace("<aws.scheduler.schedule-arn>", schedule.arn)
        .replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
        .replace("<aws.scheduler.attempt-number>", str(delivery.attempts + 1))
    )


def _sqs_send(arn: str, body: str, group_id: str | None):
    from localstack.aws.connect import connect_to

    _, _, _, region, account, name = arn.split(":", 5)
    sqs = connect_to(aws_access_key_id=account, region_name=region).sqs
    url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    kwargs = {"QueueUrl": url, "MessageBody": body}
    if group_id:
        kwargs["MessageGroupId"] = group_id
    sqs.send_message(**kwargs)


def _lambda_invoke(arn: str, body: str):
    from localstack.aws.connect import connect_to

    _, _, _, region, account, _ = arn.split(":", 5)
    client = connect_to(aws_access_key_id=account, region_name=region).lambda_
    client.invoke(FunctionName=arn, InvocationType="Event", Payload=body.encode())


class DeliveringSchedulerProvider(SchedulerProvider):
    def __init__(self):
        super().__init__()
        self._stop = threading.Event()
        self._known: dict[tuple[str, float], Delivery] = {}
        self.flex_scale = float(os.environ.get("REANIMATE_SCHEDULER_FLEX_SCALE", "1"))

    def on_after_init(self):
        threading.Thread(target=self._run, name="scheduler-delivery", daemon=True).start()

    def on_before_stop(self):
        self._stop.set()

    def _run(self):
        from moto.scheduler.models import scheduler_backends

        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick(scheduler_backends, time.time())
            except Exception:  # noqa: BLE001 - the loop must outlive one bad schedule
                LOG.exception("schedule delivery failed")

    def _first_due(self, schedule, after: float) -> float | None:
        created = float(schedule.creation_date)
        start = float(schedule.start_date) if schedule.start_date else None
        end = float(schedule.end_date) if schedule.end_date else None
        due = next_fire(schedule.schedule_expression, after, created,
                        schedule.schedule_expression_timezone, start, end)
        window = schedule.flexible_time_window or {}
        if due is not None and window.get("Mode") == "FLEXIBLE":
            due += random.uniform(0, float(window.get("MaximumWindowInMinutes", 0)) * 60 * self.flex_scale)
        return due

    def tick(self, backends, now: float):
        alive = set()
        for account_backends in list(backends.values()):
            for backend in list(account_backends.values()):
                for group in list(backend.schedule_groups.values()):
                    for schedule in list(group.schedules.values()):
                        key = (schedule.arn, float(schedule.last_modified_date))
                        alive.add(key)
                        self._consider(group, schedule, key, now)
        for key in [k for k in self._known if k not in alive]:
            del self._known[key]

    def _consider(self, group, schedule, key, now: float):
        if schedule.state != "ENABLED":
            return
        delivery = self._known.get(key)
        if delivery is None:
            try:
                # At creation, a one-time schedule in the past still fires once (AWS does so).
                after = float(schedule.creation_date) - (86400 * 365 if is_one_time(schedule.schedule_expression) else 0)
                delivery = self._known[key] = Delivery(self._first_due(schedule, after))
            except Unsupported as e:
                LOG.warning("schedule %s will not fire: %s", schedule.name, e)
                self._known[key] = Delivery(None)
                return
        if delivery.due is None or delivery.due > now:
            return
        target = schedule.target
        try:
            group_id = (target.get("SqsParameters") or {}).get("MessageGroupId")
            body = _with_context(target.get("Input") or "{}", schedule, delivery)
            if ":sqs:" in target["Arn"]:
                _sqs_send(target["Arn"], body, group_id)
            elif ":lambda:" in target["Arn"]:
                _lambda_invoke(target["Arn"], body)
            else:
                raise Unsupported(f"target {target['Arn']} is neither an SQS queue nor a Lambda function")
            LOG.info("schedule %s fired (due %s)", schedule.name, utc(delivery.due))
        except Exception as e:  # noqa: BLE001
            if self._retry(schedule, delivery, now, e):
                return
        self._fired(group, schedule, delivery, now)

    def _retry(self, schedule, delivery: Delivery, now: float, error: Exception) -> bool:
        policy = schedule.target.get("RetryPolicy") or {}
        delivery.first_attempt = delivery.first_attempt or now
        delivery.attempts += 1
        too_old = now - delivery.first_attempt > float(policy.get("MaximumEventAgeInSeconds", 86400))
        if delivery.attempts <= int(policy.get("MaximumRetryAttempts", 185)) and not too_old:
            delivery.due = now + min(60.0, 2 ** min(delivery.attempts, 6))
            LOG.warning("schedule %s delivery failed (%s); retry %d", schedule.name, error, delivery.attempts)
            return True
        dead_letter = (schedule.target.get("DeadLetterConfig") or {}).get("Arn")
        if dead_letter:
            try:
                _sqs_send(dead_letter, schedule.target.get("Input") or "{}", None)
            except Exception:  # noqa: BLE001
                LOG.exception("schedule %s: the dead-letter queue refused it too", schedule.name)
        LOG.error("schedule %s gave up after %d attempts: %s", schedule.name, delivery.attempts, error)
        return False

    def _fired(self, group, schedule, delivery: Delivery, now: float):
        delivery.attempts, delivery.first_attempt = 0, None
        fired_due = delivery.due
        if is_one_time(schedule.schedule_expression):
            delivery.due = None
            if (schedule.action_after_completion or "NONE") == "DELETE":
                group.schedules.pop(schedule.name, None)
            return
        try:
            delivery.due = self._first_due(schedule, max(now, fired_due or now))
        except Unsupported:
            delivery.due = None

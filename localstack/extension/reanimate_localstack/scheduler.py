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

import functools
import logging
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from localstack.services.scheduler.provider import SchedulerProvider

from reanimate_localstack.schedules import Unsupported, is_one_time, next_fire, utc

LOG = logging.getLogger(__name__)
TICK_SECONDS = 0.25
# Firings due together (a thousand timers armed for the same second) are sent concurrently, as
# Scheduler's own invocations are, instead of one after another.
SENDERS = 16


class Delivery:
    """What the loop knows of one schedule (keyed by ARN and last modification)."""

    def __init__(self, due: float | None):
        self.due = due
        self.fired_at: float | None = None
        self.attempts = 0
        self.first_attempt: float | None = None
        # Being sent: the next tick must not send it again.
        self.in_flight = False


def _with_context(body: str, schedule, delivery) -> str:
    """Fills in Scheduler's context attributes, as AWS does for templated targets' input."""
    scheduled = datetime.fromtimestamp(delivery.due, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        body.replace("<aws.scheduler.scheduled-time>", scheduled)
        .replace("<aws.scheduler.schedule-arn>", schedule.arn)
        .replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
        .replace("<aws.scheduler.attempt-number>", str(delivery.attempts + 1))
    )


@functools.lru_cache(maxsize=None)
def _clients(account: str, region: str):
    from localstack.aws.connect import connect_to

    return connect_to(aws_access_key_id=account, region_name=region)


@functools.lru_cache(maxsize=None)
def _queue_url(arn: str) -> str:
    _, _, _, region, account, name = arn.split(":", 5)
    return _clients(account, region).sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


def _sqs_send(arn: str, body: str, group_id: str | None):
    _, _, _, region, account, _ = arn.split(":", 5)
    kwargs = {"QueueUrl": _queue_url(arn), "MessageBody": body}
    if group_id:
        kwargs["MessageGroupId"] = group_id
    try:
        _clients(account, region).sqs.send_message(**kwargs)
    except Exception:
        _queue_url.cache_clear()  # the queue may have been deleted and made again
        raise


def _lambda_invoke(arn: str, body: str):
    _, _, _, region, account, _ = arn.split(":", 5)
    _clients(account, region).lambda_.invoke(FunctionName=arn, InvocationType="Event", Payload=body.encode())


class DeliveringSchedulerProvider(SchedulerProvider):
    def __init__(self):
        super().__init__()
        self._stop = threading.Event()
        self._known: dict[tuple[str, float], Delivery] = {}
        self.flex_scale = float(os.environ.get("REANIMATE_SCHEDULER_FLEX_SCALE", "1"))
        self._senders = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="scheduler-send")

    def on_after_init(self):
        threading.Thread(target=self._run, name="scheduler-delivery", daemon=True).start()

    def on_before_stop(self):
        self._stop.set()
        self._senders.shutdown(wait=False, cancel_futures=True)

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
        due = []
        for account_backends in list(backends.values()):
            for backend in list(account_backends.values()):
                for group in list(backend.schedule_groups.values()):
                    for schedule in list(group.schedules.values()):
                        key = (schedule.arn, float(schedule.last_modified_date))
                        alive.add(key)
                        if self._consider(schedule, key, now):
                            due.append((group, schedule, self._known[key]))
        for key in [k for k in self._known if k not in alive]:
            del self._known[key]
        # Firings for one queue go ten to a SendMessageBatch; the rest one by one.
        by_queue: dict[str, list] = {}
        for work in due:
            target = work[1].target
            if ":sqs:" in target["Arn"] and not (target.get("SqsParameters") or {}).get("MessageGroupId"):
                by_queue.setdefault(target["Arn"], []).append(work)
            else:
                self._senders.submit(self._deliver, *work, now)
        for arn, works in by_queue.items():
            for start in range(0, len(works), 10):
                self._senders.submit(self._deliver_batch, arn, works[start : start + 10], now)

    def _consider(self, schedule, key, now: float) -> bool:
        """Whether the schedule is due now (it is then marked in flight)."""
        if schedule.state != "ENABLED":
            return False
        delivery = self._known.get(key)
        if delivery is None:
            try:
                # At creation, a one-time schedule in the past still fires once (AWS does so).
                after = float(schedule.creation_date) - (86400 * 365 if is_one_time(schedule.schedule_expression) else 0)
                delivery = self._known[key] = Delivery(self._first_due(schedule, after))
            except Unsupported as e:
                LOG.warning("schedule %s will not fire: %s", schedule.name, e)
                self._known[key] = Delivery(None)
                return False
        if delivery.due is None or delivery.due > now or delivery.in_flight:
            return False
        delivery.in_flight = True
        return True

    def _deliver_batch(self, arn: str, works, now: float):
        _, _, _, region, account, _ = arn.split(":", 5)
        entries = [
            {"Id": str(i), "MessageBody": _with_context(schedule.target.get("Input") or "{}", schedule, delivery)}
            for i, (_, schedule, delivery) in enumerate(works)
        ]
        try:
            out = _clients(account, region).sqs.send_message_batch(QueueUrl=_queue_url(arn), Entries=entries)
            failed = {f["Id"]: f for f in out.get("Failed", [])}
        except Exception as e:  # noqa: BLE001 - every entry failed
            _queue_url.cache_clear()
            failed = {entry["Id"]: {"Message": str(e)} for entry in entries}
        for i, (group, schedule, delivery) in enumerate(works):
            problem = failed.get(str(i))
            if problem is None:
                LOG.info("schedule %s fired (due %s)", schedule.name, utc(delivery.due))
            elif self._retry(schedule, delivery, now, RuntimeError(problem.get("Message"))):
                delivery.in_flight = False
                continue
            self._fired(group, schedule, delivery, now)
            delivery.in_flight = False

    def _deliver(self, group, schedule, delivery: Delivery, now: float):
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
                delivery.in_flight = False
                return
        except BaseException:
            delivery.in_flight = False
            raise
        self._fired(group, schedule, delivery, now)
        delivery.in_flight = False

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

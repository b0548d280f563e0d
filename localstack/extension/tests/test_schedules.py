"""When schedules fire: the pure part of the Scheduler delivery plugin."""

from datetime import datetime, timezone

import pytest

from reanimate_localstack.schedules import Unsupported, is_one_time, next_fire


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_at_fires_once_at_its_time_in_its_time_zone():
    assert next_fire("at(2026-11-26T07:00:00)", ts("2026-11-26T06:00:00"), 0) == ts("2026-11-26T07:00:00")
    assert next_fire("at(2026-11-26T07:00:00)", ts("2026-11-26T07:00:00"), 0) is None
    berlin = next_fire("at(2026-11-26T08:00:00)", 0, 0, "Europe/Berlin")
    assert berlin == ts("2026-11-26T07:00:00")
    assert is_one_time("at(2026-11-26T08:00:00)") and not is_one_time("rate(1 minute)")


def test_rate_counts_periods_from_the_start_or_creation():
    created = ts("2026-11-26T07:00:00")
    assert next_fire("rate(5 minutes)", created, created) == created + 300
    assert next_fire("rate(5 minutes)", created + 301, created) == created + 600
    assert next_fire("rate(1 hour)", 0, created, start=created + 60) == created + 60 + 3600
    assert next_fire("rate(1 day)", created, created, end=created + 3600) is None


def test_cron_fields_ranges_lists_steps_and_names():
    after = ts("2026-11-26T07:00:30")  # a Thursday
    assert next_fire("cron(*/15 * * * ? *)", after, 0) == ts("2026-11-26T07:15:00")
    assert next_fire("cron(0 9 ? * MON-FRI *)", after, 0) == ts("2026-11-26T09:00:00")
    assert next_fire("cron(0 9 ? * SAT,SUN *)", after, 0) == ts("2026-11-28T09:00:00")
    assert next_fire("cron(30 6 1 JAN ? 2027)", after, 0) == ts("2027-01-01T06:30:00")
    assert next_fire("cron(0 8 * * ? *)", after, 0, "America/New_York") == ts("2026-11-26T13:00:00")


def test_unsupported_expressions_say_so():
    for bad in ("cron(0 0 L * ? *)", "cron(0 0 * *)", "every day"):
        with pytest.raises(Unsupported):
            next_fire(bad, 0, 0)

"""When a schedule fires: ``at()``, ``rate()`` and ``cron()`` expressions as EventBridge Scheduler
reads them, with start and end dates and time zones. Pure functions, tested on their own."""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
CRON = re.compile(r"^cron\((.+)\)$")
MONTHS = {name.upper(): i + 1 for i, name in enumerate(calendar.month_abbr[1:])}
DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class Unsupported(ValueError):
    pass


def is_one_time(expression: str) -> bool:
    return bool(AT.match(expression.strip()))


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """Values a cron field allows; None for "any" (`*` or `?`)."""
    if text in ("*", "?"):
        return None
    if any(c in text for c in "LW#"):
        raise Unsupported(f"cron field {text!r}: L, W and # are not supported here")
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        def value(token: str) -> int:
            token = token.upper()
            if names and token in names:
                return names[token]
            try:
                return int(token)
            except ValueError:
                raise Unsupported(f"cron value {token!r} is not a number or a known name") from None
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = value(a), value(b)
        else:
            start = value(part)
            end = high if step > 1 else start
        values.update(range(start, end + 1, step))
    return {v for v in values if low <= v <= high}


def _cron_matches(fields, moment: datetime) -> bool:
    minutes, hours, dom, months, dow, years = fields
    aws_dow = (moment.isoweekday() % 7) + 1  # SUN=1 .. SAT=7
    day_ok = (dom is None or moment.day in dom) and (dow is None or aws_dow in dow)
    return (
        (minutes is None or moment.minute in minutes)
        and (hours is None or moment.hour in hours)
        and day_ok
        and (months is None or moment.month in months)
        and (years is None or moment.year in years)
    )


def next_fire(expression: str, after: float, created: float, tz_name: str = "UTC",
              start: float | None = None, end: float | None = None) -> float | None:
    """The first firing strictly after `after` (epoch seconds), or None if there is none."""
    expression = expression.strip()
    tz = ZoneInfo(tz_name or "UTC")
    lower = max(after, (start - 1e-3) if start else after)
    result: float | None = None
    if m := AT.match(expression):
        at = datetime.fromisoformat(m.group(1)).replace(tzinfo=tz).timestamp()
        result = at if at > after else None
    elif m := RATE.match(expression):
        period = int(m.group(1)) * UNIT_SECONDS[m.group(2).rstrip("s")]
        if period <= 0:
            raise Unsupported("a rate must be positive")
        origin = start or created
        n = max(1, int((lower - origin) // period) + 1)
        result = origin + n * period
    elif m := CRON.match(expression):
        parts = m.group(1).split()
        if len(parts) != 6:
            raise Unsupported(f"cron needs 6 fields, got {len(parts)}")
        fields = (
            _field(parts[0], 0, 59), _field(parts[1], 0, 23), _field(parts[2], 1, 31),
            _field(parts[3], 1, 12, MONTHS), _field(parts[4], 1, 7, DAYS), _field(parts[5], 1970, 2199),
        )
        moment = datetime.fromtimestamp(lower, tz).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60 * 2):  # two years of minutes at most
            if _cron_matches(fields, moment):
                result = moment.timestamp()
                break
            moment += timedelta(minutes=1)
    else:
        raise Unsupported(f"unknown schedule expression {expression!r}")
    if result is not None and end is not None and result > end:
        return None
    return result


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()

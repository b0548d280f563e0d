"""DynamoDB on moto: every operation is answered by LocalStack's bundled moto backend (conditional
writes, ``ReturnValuesOnConditionCheckFailure``, transactions, queries, TTL settings). Moto stores
TTL settings but never expires items, so a sweeper thread deletes expired items the way DynamoDB
does (in the background, some time after expiry).

DynamoDB applies each write atomically: a conditional write's check and its write cannot
interleave with another write. Moto does not lock, and LocalStack serves requests on many threads,
so two conditional writes on the same version could both succeed; writes are therefore answered
one at a time (``atomic_moto_dispatcher``)."""

import logging
import threading
import time

from localstack.aws.api.dynamodb import DynamodbApi
from localstack.services.plugins import ServiceLifecycleHook

LOG = logging.getLogger(__name__)

# DynamoDB deletes expired items within days; here a few seconds, so tests can see it.
SWEEP_INTERVAL_SECONDS = 2.0


def expired_keys(table, now: float):
    """Keys of the items of a moto table whose TTL attribute is a number in the past."""
    ttl = getattr(table, "ttl", None) or {}
    if ttl.get("TimeToLiveStatus") != "ENABLED":
        return []
    attribute = ttl.get("AttributeName")
    keys = []
    for item in list(table.all_items()):
        value = item.attrs.get(attribute)
        if value is None or value.type != "N":
            continue
        try:
            expires_at = float(value.value)
        except ValueError:
            continue
        if expires_at <= now:
            keys.append((item.hash_key, item.range_key))
    return keys


def sweep_once(backends, now: float | None = None) -> int:
    """Deletes expired items from every table of every account and region; returns how many."""
    now = time.time() if now is None else now
    deleted = 0
    for account_backends in list(backends.values()):
        for backend in list(account_backends.values()):
            for table in list(backend.tables.values()):
                for hash_key, range_key in expired_keys(table, now):
                    hash_value = hash_key.value if hash_key is not None else None
                    range_value = range_key.value if range_key is not None else None
                    table.delete_item(hash_key=hash_key, range_key=range_key)
                    LOG.debug("TTL expired %s %s/%s", table.name, hash_value, range_value)
                    deleted += 1
    return deleted


class MotoDynamoDBProvider(DynamodbApi, ServiceLifecycleHook):
    def __init__(self):
        self._stop = threading.Event()
        self._sweeper = None

    def on_after_init(self):
        self._sweeper = threading.Thread(target=self._sweep_forever, name="dynamodb-ttl-sweeper", daemon=True)
        self._sweeper.start()

    def on_before_stop(self):
        self._stop.set()

    def _sweep_forever(self):
        from moto.dynamodb.models import dynamodb_backends

        while not self._stop.wait(SWEEP_INTERVAL_SECONDS):
            try:
                sweep_once(dynamodb_backends)
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad table
                LOG.exception("TTL sweep failed")


# The operations that write items; each is answered under one lock.
WRITES = (
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "ExecuteStatement",
    "BatchExecuteStatement",
    "ExecuteTransaction",
)
_WRITE_LOCK = threading.Lock()


def _one_at_a_time(handler):
    def locked(context, request):
        with _WRITE_LOCK:
            return handler(context, request)

    return locked


def atomic_moto_dispatcher(provider):
    """LocalStack's moto dispatch table for ``provider``, with every write made atomic."""
    from localstack.services.moto import MotoFallbackDispatcher

    table = MotoFallbackDispatcher(provider)
    for operation in WRITES:
        if operation in table:
            table[operation] = _one_at_a_time(table[operation])
    return table

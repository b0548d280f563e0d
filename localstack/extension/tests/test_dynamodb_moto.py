"""The dynamodb:moto provider, through the real AWS API (boto3 against the running emulator)."""

import time
import uuid

import pytest
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def ddb(client):
    return client("dynamodb")


@pytest.fixture
def table(ddb):
    name = f"t-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    ddb.delete_table(TableName=name)


def item(id_, version, **extra):
    return {"id": {"S": id_}, "version": {"N": str(version)}, **extra}


def test_is_served_by_moto_not_dynamodb_local(ddb, table):
    # DynamoDB Local would need Java and a download; this machine has neither, so any answer at
    # all shows the moto provider is in place.
    assert ddb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"


def test_conditional_put_on_version_returns_the_current_item_on_conflict(ddb, table):
    ddb.put_item(TableName=table, Item=item("a", 1), ConditionExpression="attribute_not_exists(id)")
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName=table, Item=item("a", 1), ConditionExpression="attribute_not_exists(id)")
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"

    ddb.put_item(
        TableName=table,
        Item=item("a", 2, state={"S": "two"}),
        ConditionExpression="version = :v",
        ExpressionAttributeValues={":v": {"N": "1"}},
    )
    with pytest.raises(ClientError) as err:
        ddb.put_item(
            TableName=table,
            Item=item("a", 2, state={"S": "stale"}),
            ConditionExpression="version = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert err.value.response["Item"] == item("a", 2, state={"S": "two"})
    got = ddb.get_item(TableName=table, Key={"id": {"S": "a"}}, ConsistentRead=True)["Item"]
    assert got["state"] == {"S": "two"}


def test_a_transaction_with_a_failing_condition_writes_nothing(ddb, table):
    ddb.put_item(TableName=table, Item=item("x", 5))
    with pytest.raises(ClientError) as err:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": item("y", 1)}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": item("x", 6),
                        "ConditionExpression": "version = :v",
                        "ExpressionAttributeValues": {":v": {"N": "4"}},
                    }
                },
            ]
        )
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert "Item" not in ddb.get_item(TableName=table, Key={"id": {"S": "y"}})
    assert ddb.get_item(TableName=table, Key={"id": {"S": "x"}})["Item"]["version"] == {"N": "5"}


def test_expired_items_are_deleted_and_live_ones_kept(ddb, table):
    ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    assert ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    now = int(time.time())
    ddb.put_item(TableName=table, Item=item("old", 1, expires_at={"N": str(now - 10)}))
    ddb.put_item(TableName=table, Item=item("new", 1, expires_at={"N": str(now + 3600)}))
    ddb.put_item(TableName=table, Item=item("forever", 1))

    deadline = time.monotonic() + 20
    while "Item" in ddb.get_item(TableName=table, Key={"id": {"S": "old"}}):
        assert time.monotonic() < deadline, "the expired item was never swept"
        time.sleep(0.5)
    for kept in ("new", "forever"):
        assert "Item" in ddb.get_item(TableName=table, Key={"id": {"S": kept}})


def test_concurrent_conditional_writes_on_one_version_let_exactly_one_win(ddb, table):
    # DynamoDB checks a condition and writes atomically; LocalStack answers requests on many
    # threads, so without the provider's lock two writers of the same version can both win.
    from concurrent.futures import ThreadPoolExecutor

    from conftest import aws_client

    name = f"t-{uuid.uuid4().hex[:12]}"
    # As the instances table: a sparse index, and a large item (a busy fan-in parent's record).
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "p", "AttributeType": "S"},
            {"AttributeName": "s", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "sparse",
                "KeySchema": [{"AttributeName": "p", "KeyType": "HASH"}, {"AttributeName": "s", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    table = name
    ddb.put_item(TableName=table, Item=item("hot", 0))
    payload = {"S": "x" * 60_000}

    def writer(n):
        client = aws_client("dynamodb")
        wins = 0
        for version in range(0, 30):
            try:
                client.put_item(
                    TableName=table,
                    Item=item("hot", version + 1, body=payload, writer={"N": str(n)}),
                    ConditionExpression="version = :v",
                    ExpressionAttributeValues={":v": {"N": str(version)}},
                )
                wins += 1
            except ClientError as e:
                assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"
        return wins

    with ThreadPoolExecutor(max_workers=24) as pool:
        wins = list(pool.map(writer, range(24)))
    assert sum(wins) == 30, f"each version is written once, got {wins}"

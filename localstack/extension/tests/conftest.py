"""Shared test set-up: boto3 clients for the emulator the tests run against."""

import os

import boto3
import pytest


def aws_client(service: str):
    """A boto3 client for `service` at AWS_ENDPOINT_URL (LocalStack's default otherwise)."""
    return boto3.client(
        service,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="session")
def client():
    """The `aws_client` factory, as a fixture."""
    return aws_client

"""LocalStack plugins for reanimate on a machine without Docker or internet.

- ``dynamodb:moto`` (``PROVIDER_OVERRIDE_DYNAMODB=moto``): DynamoDB served by the moto copy that
  LocalStack bundles, instead of DynamoDB Local (which needs Java and a download), with a sweeper
  that deletes items whose TTL attribute has passed.
"""

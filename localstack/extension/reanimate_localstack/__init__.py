"""LocalStack plugins for reanimate on a machine without Docker or internet.

- With the ``host`` executor, function URLs are admitted as browser origins of their own
  (``function_urls``): a page's form posts back to its function URL as it does on AWS.

- ``dynamodb:moto`` (``PROVIDER_OVERRIDE_DYNAMODB=moto``): DynamoDB served by the moto copy that
  LocalStack bundles, instead of DynamoDB Local (which needs Java and a download), with a sweeper
  that deletes items whose TTL attribute has passed.
"""

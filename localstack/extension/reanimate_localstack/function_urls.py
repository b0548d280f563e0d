"""Lambda function URLs as browsers reach them.

LocalStack's gateway refuses any request whose ``Origin`` is not one of its own (a guard for its
API against web pages that try to drive it from a browser). A function URL, though, is a web site
of its own on AWS: a form on one of its pages posts back to it, with its own origin. LocalStack
already lets S3 websites and CloudFront distributions through in the same way; this adds function
URLs (``<id>.lambda-url.<region>.<LocalStack's domain>``, on LocalStack's port), and nothing else.
"""

import re

# The guard reads groups 2 (domain) and 3 (port) of each pattern: keep that shape.
FUNCTION_URL_ORIGIN = re.compile(r"(https?://[a-z0-9]+\.lambda-url\.[a-z0-9-]+)\.(.[^:]*)(:[0-9]{2,5})?")


def allow_function_url_origins() -> None:
    """Adds function URLs to the origins LocalStack's CORS guard admits (idempotent)."""
    from localstack.aws.handlers import cors

    if FUNCTION_URL_ORIGIN not in cors.DYNAMIC_INTERNAL_ORIGINS:
        cors.DYNAMIC_INTERNAL_ORIGINS = (*cors.DYNAMIC_INTERNAL_ORIGINS, FUNCTION_URL_ORIGIN)

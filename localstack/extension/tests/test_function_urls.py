"""Function URLs as browser origins: admitted by LocalStack's CORS guard, nothing else is."""

from localstack.aws.handlers import cors

from reanimate_localstack.function_urls import allow_function_url_origins


def admitted(origin: str) -> bool:
    return cors.CorsEnforcer._is_in_allowed_origins(cors.ALLOWED_CORS_ORIGINS, origin)


def test_a_function_url_is_its_own_origin_and_other_sites_are_still_refused():
    allow_function_url_origins()
    allow_function_url_origins()  # idempotent
    assert admitted("http://k36vtx5oyag6r7nbdaxkpag1t9idd1kd.lambda-url.us-east-1.localhost.localstack.cloud:4566")
    assert not admitted("http://evil.example")
    assert not admitted("http://k36vtx5o.lambda-url.us-east-1.evil.example:4566")
    assert not admitted("http://k36vtx5o.lambda-url.us-east-1.localhost.localstack.cloud:8080")

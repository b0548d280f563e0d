"""Provider plugins, registered under ``localstack.aws.provider`` in pyproject.toml."""

from localstack.services.plugins import Service, aws_provider


@aws_provider(api="dynamodb", name="moto")
def dynamodb_moto():
    from reanimate_localstack.dynamodb import MotoDynamoDBProvider, atomic_moto_dispatcher

    provider = MotoDynamoDBProvider()
    return Service.for_provider(provider, dispatch_table_factory=atomic_moto_dispatcher)


from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin  # noqa: E402


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    """``LAMBDA_RUNTIME_EXECUTOR=host``: run each function's bootstrap as a host process."""

    name = "host"

    def load(self, *args, **kwargs):
        from reanimate_localstack.function_urls import allow_function_url_origins
        from reanimate_localstack.host_executor import HostRuntimeExecutor

        # Loaded with the Lambda service, before any function URL can be called.
        allow_function_url_origins()
        return HostRuntimeExecutor


@aws_provider(api="scheduler", name="reanimate")
def scheduler_reanimate():
    from localstack.services.moto import MotoFallbackDispatcher

    from reanimate_localstack.scheduler import DeliveringSchedulerProvider

    return Service.for_provider(DeliveringSchedulerProvider(), dispatch_table_factory=MotoFallbackDispatcher)

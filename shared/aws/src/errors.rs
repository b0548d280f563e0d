//! Maps AWS SDK errors onto the runtime's taxonomy: retryable (throttling, 5xx, network, a missing
//! resource during a deploy) or terminal (a request AWS will never accept).

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use reanimate_core::Error;
use reanimate_core::error::error_chain;
use std::fmt::Debug;

const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalServerError",
    "InternalFailure",
    "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];

/// Classifies an SDK error; `what` names the call for the message ("DynamoDB PutItem").
pub fn classify<E, R>(what: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ConstructionFailure(_) => {
            Error::terminal(format!("{what}: the request could not be built: {err:?}"))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Error::retryable(format!("{what}: {}", error_chain(&err)))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or("");
            if RETRYABLE_CODES.contains(&code) {
                Error::retryable(format!("{what}: {code}: {message}"))
            } else {
                Error::terminal(format!("{what}: {code}: {message}"))
            }
        }
        _ => Error::retryable(format!("{what}: {}", error_chain(&err))),
    }
}

/// The outcome of a call that may meet an expected, harmless refusal (an idempotent repeat):
/// `Ok(true)` if it succeeded, `Ok(false)` if the service refused it with an error `expected`
/// accepts, the classified error otherwise.
pub fn tolerate<T, E, R>(
    what: &str,
    result: Result<T, SdkError<E, R>>,
    expected: impl FnOnce(&E) -> bool,
) -> reanimate_core::Result<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if err.as_service_error().is_some_and(expected) => Ok(false),
        Err(err) => Err(classify(what, err)),
    }
}

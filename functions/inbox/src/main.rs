//! The web inbox, the operator console and the notifier as Lambda functions: the function URL's
//! requests and the notify queue's records reach the same bootstrap (see shared/apps/web).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    reanimate_web::serve().await
}

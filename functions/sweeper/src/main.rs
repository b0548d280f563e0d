//! The sweeper as a Lambda function, invoked every minute by an EventBridge Scheduler schedule:
//! it sends the outboxes that could not be sent when their step was saved. Configuration comes
//! from the environment the template sets (`REANIMATE_*`); see shared/aws.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    reanimate_aws::lambda::serve_sweeper().await
}

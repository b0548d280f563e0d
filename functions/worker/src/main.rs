//! The `worker` atom as a Lambda function, fed by its own SQS queue. Configuration comes from the
//! environment the template sets (`REANIMATE_*`); see shared/aws.

use reanimate_atoms::Worker;
use reanimate_core::Registry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    reanimate_aws::lambda::serve(Registry::new().with(Worker)).await
}

//! The `worker` atom as a Lambda function, fed by its own SQS queue, with the sample activity it
//! may call (`sample.checksum`). Configuration comes from the environment the template sets
//! (`REANIMATE_*`); see shared/aws.

use reanimate_atoms::Worker;
use reanimate_core::Registry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    reanimate_aws::lambda::serve_with(Registry::new().with(Worker), |_, _| {
        Box::pin(async { Ok(reanimate_atoms::activities().0) })
    })
    .await
}

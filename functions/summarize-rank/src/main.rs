//! The `summarize-rank` atom as a Lambda function, fed by its own SQS queue. Configuration comes from
//! the environment the template sets (`REANIMATE_*`); its activities (model, mailbox, digest
//! store) are built once per process. See shared/apps/email/src/aws.rs.

use reanimate_core::Registry;
use reanimate_email::atoms::SummarizeRank;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let registry = Registry::new().with(SummarizeRank);
    reanimate_aws::lambda::serve_with(registry, reanimate_email::aws::activities).await
}

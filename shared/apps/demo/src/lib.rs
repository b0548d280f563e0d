//! The demo's reusable part: the email assistant live on a deployed stack, as `make demo` runs
//! it and as the integration test checks it.

pub mod email_live;

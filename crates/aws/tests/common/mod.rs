//! Helpers of the AWS integration tests: the emulator's endpoint (from
//! `AWS_TEST_ENDPOINT_URL`, which `scripts/test` and `scripts/moto.sh`
//! provide — a missing endpoint fails the test, never skips it), SDK
//! configuration with the emulator's static credentials, and a backend on a
//! fresh random queue prefix and table per test, so tests never collide.

#![allow(dead_code, reason = "each test file uses a different subset")]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use sqsaga_aws::{AwsBackend, AwsSettings, retry_config, timeout_config};

/// The variable naming the emulator's endpoint.
pub const ENDPOINT_VAR: &str = "AWS_TEST_ENDPOINT_URL";

/// The emulator's endpoint; panics with what to do when it is not set.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(e) if !e.trim().is_empty() => e.trim().to_string(),
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the AWS tests run against the moto emulator. Run `scripts/test` (it starts \
             moto and sets it), or `scripts/moto.sh start && eval \"$(scripts/moto.sh env)\"` and run the tests \
             again."
        ),
    }
}

/// SDK configuration for `endpoint` with static test credentials.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "sqsaga-tests"))
        .retry_config(retry_config(4))
        .timeout_config(timeout_config())
        .load()
        .await
}

/// SDK configuration for the emulator.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(&endpoint()).await
}

/// A short random tag, for names.
pub fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Settings with a fresh queue prefix and table.
pub fn fresh_settings() -> AwsSettings {
    let t = tag();
    AwsSettings { queue_prefix: format!("t{t}-"), table: format!("t{t}-sagas"), ..AwsSettings::default() }
}

/// A backend on the emulator with a fresh prefix; its table is created.
pub async fn backend() -> AwsBackend {
    backend_with(fresh_settings()).await
}

/// A backend on the emulator with `settings`; its table is created.
pub async fn backend_with(settings: AwsSettings) -> AwsBackend {
    let sdk = sdk_config().await;
    let backend = AwsBackend::from_sdk_config(&sdk, settings).unwrap();
    backend.dynamo().ensure_table(None).await.unwrap();
    backend
}

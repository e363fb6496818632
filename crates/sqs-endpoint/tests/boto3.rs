//! boto3 against the endpoint: `tests/boto3_client.py` run with the
//! project virtualenv's Python (`.venv`, where `scripts/moto.sh` installs
//! moto and with it boto3; `scripts/test` runs it first), pointed at the
//! endpoint only through `AWS_ENDPOINT_URL`, as an unmodified program would be.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

mod support;

use std::path::Path;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_unmodified_uses_the_endpoint_through_aws_endpoint_url() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let has_boto3 = Command::new(&python).args(["-c", "import boto3"]).status().is_ok_and(|s| s.success());
    assert!(
        has_boto3,
        "{} cannot import boto3: run `scripts/moto.sh start` (it creates .venv and installs moto, which brings \
         boto3), or `python3 -m venv .venv && .venv/bin/pip install boto3`",
        python.display()
    );
    let endpoint = support::start(None).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boto3_client.py");
    let url = endpoint.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(support::QUEUE)
            .env("AWS_ENDPOINT_URL", url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_SQS")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "boto3 script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("boto3: all checks passed"), "{stdout}");
}

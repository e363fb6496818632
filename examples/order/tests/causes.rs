//! Compensation causes read off the reasons the state machine records: one
//! line per reason, and the counts over a set of sagas.

use serde_json::json;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_order::{Cause, CompensationCauses, compensation_causes};

#[test]
fn each_reason_has_its_cause() {
    let cases: &[(Option<&str>, Cause)] = &[
        (Some("step reserve_stock attempt 1 timed out"), Cause::StepTimeout),
        (Some("saga deadline passed"), Cause::Deadline),
        (
            Some("step charge_payment refused: expired in queue after 31s (latest start was 1s ago)"),
            Cause::ExpiredInQueue,
        ),
        (Some("step charge_payment refused: card declined: insufficient funds"), Cause::Refused),
        (Some("step reserve_stock refused: out of stock: sku-rare-lamp has 0, order wants 2"), Cause::Refused),
        (Some("step send_confirmation failed after 8 attempts: mail server unavailable"), Cause::RetriesExhausted),
        // Free text after the step's own words does not mislead.
        (Some("step charge_payment failed after 3 attempts: upstream refused: timed out"), Cause::RetriesExhausted),
        (Some("step charge_payment refused: upstream attempt 3 timed out"), Cause::Refused),
        (Some("something else"), Cause::Unknown),
        (None, Cause::Unknown),
    ];
    for (reason, cause) in cases {
        assert_eq!(Cause::of(*reason), *cause, "{reason:?}");
    }
    assert!(Cause::ExpiredInQueue.is_timeout() && Cause::Deadline.is_timeout() && Cause::StepTimeout.is_timeout());
    assert!(!Cause::Refused.is_timeout() && !Cause::RetriesExhausted.is_timeout() && !Cause::Unknown.is_timeout());
}

fn saga(status: SagaStatus, reason: Option<&str>) -> SagaInstance {
    SagaInstance {
        id: "s".into(),
        saga: "create_order".into(),
        version: 1,
        status,
        input: json!({}),
        steps: Vec::new(),
        current: 0,
        started_at: 0,
        deadline_at: 0,
        updated_at: 0,
        reason: reason.map(str::to_string),
        trace: None,
    }
}

#[test]
fn compensated_sagas_are_counted_by_cause() {
    use SagaStatus::*;
    let sagas = [
        saga(Compensated, Some("step reserve_stock attempt 2 timed out")),
        saga(Compensated, Some("saga deadline passed")),
        saga(Compensated, Some("step charge_payment refused: expired in queue after 31s (latest start was 1s ago)")),
        saga(Compensated, Some("step charge_payment refused: card declined: insufficient funds")),
        saga(Compensated, Some("step charge_payment refused: card declined: unknown account")),
        saga(Compensated, Some("step send_confirmation failed after 8 attempts: mail server unavailable")),
        saga(Compensated, None),
        // Not compensated: not counted, whatever their reason.
        saga(Completed, None),
        saga(Compensating, Some("saga deadline passed")),
        saga(NeedsOperator, Some("compensation of charge_payment refused: no")),
    ];
    let got = compensation_causes(&sagas);
    let expected = CompensationCauses {
        compensated: 7,
        timeout: 3,
        step_timeout: 1,
        deadline: 1,
        expired_in_queue: 1,
        business: 3,
        refused: 2,
        retries_exhausted: 1,
        unknown: 1,
    };
    assert_eq!(got, expected);
    assert_eq!(compensation_causes(&[]), CompensationCauses::default());
    assert_eq!(
        got.to_string(),
        "compensated because of time: 3 (step timeout 1, deadline 1, expired in queue 1)\n\
         compensated for business reasons: 3 (refused 2, retries exhausted 1)\n\
         compensated for an unknown reason: 1"
    );
    let json = serde_json::to_value(got).unwrap_or_default();
    assert_eq!(json["timeout"], 3);
}

//! Dollars from counts: what a million saga steps and an idle hour cost at
//! list prices, from the requests and capacity units the SQS benchmark
//! counted. Pure arithmetic, tested by table; the prices are flags of
//! `sqsaga bench sqs` (`--price-sqs-per-million` and the two DynamoDB ones).
//!
//! The defaults are the public on-demand list prices (us-east-1): SQS
//! standard queues $0.40 per million requests (each 64 KB chunk of a
//! payload is a request; ours are far smaller), DynamoDB $0.625 per million
//! write request units and $0.125 per million read request units. Free
//! tiers are ignored: they do not scale.

use std::collections::BTreeMap;

use serde::Serialize;

/// List prices, dollars per million.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub sqs_per_million: f64,
    pub wru_per_million: f64,
    pub rru_per_million: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices { sqs_per_million: 0.40, wru_per_million: 0.625, rru_per_million: 0.125 }
    }
}

/// Counts over some span: requests and units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub sqs_requests: f64,
    pub dynamodb_requests: f64,
    pub wru: f64,
    pub rru: f64,
}

impl Counts {
    /// Dollars at `prices`.
    pub fn usd(&self, prices: &Prices) -> f64 {
        (self.sqs_requests * prices.sqs_per_million
            + self.wru * prices.wru_per_million
            + self.rru * prices.rru_per_million)
            / 1e6
    }

    /// The same counts divided by `n` (per step, per hour).
    pub fn per(&self, n: f64) -> Counts {
        let n = if n > 0.0 { n } else { f64::INFINITY };
        Counts {
            sqs_requests: self.sqs_requests / n,
            dynamodb_requests: self.dynamodb_requests / n,
            wru: self.wru / n,
            rru: self.rru / n,
        }
    }
}

/// Cost per step and per million steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCost {
    pub sqs_requests_per_step: f64,
    pub dynamodb_requests_per_step: f64,
    pub wru_per_step: f64,
    pub rru_per_step: f64,
    pub usd_per_million_steps: f64,
    /// The same split by what is billed.
    pub usd_per_million_steps_sqs: f64,
    pub usd_per_million_steps_wru: f64,
    pub usd_per_million_steps_rru: f64,
}

/// What `counts` over `steps` steps cost per step.
pub fn step_cost(counts: &Counts, steps: u64, prices: &Prices) -> StepCost {
    let per = counts.per(steps as f64);
    let million = |c: Counts| round(c.usd(prices) * 1e6, 4);
    StepCost {
        sqs_requests_per_step: round(per.sqs_requests, 4),
        dynamodb_requests_per_step: round(per.dynamodb_requests, 4),
        wru_per_step: round(per.wru, 4),
        rru_per_step: round(per.rru, 4),
        usd_per_million_steps: million(per),
        usd_per_million_steps_sqs: million(Counts { sqs_requests: per.sqs_requests, ..Counts::default() }),
        usd_per_million_steps_wru: million(Counts { wru: per.wru, ..Counts::default() }),
        usd_per_million_steps_rru: million(Counts { rru: per.rru, ..Counts::default() }),
    }
}

/// An idle process's requests and dollars per hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourCost {
    pub sqs_requests_per_hour: f64,
    pub dynamodb_requests_per_hour: f64,
    pub wru_per_hour: f64,
    pub rru_per_hour: f64,
    pub usd_per_hour: f64,
}

/// What `counts` over `window_s` seconds cost per hour.
pub fn hour_cost(counts: &Counts, window_s: f64, prices: &Prices) -> HourCost {
    let per = counts.per(window_s / 3600.0);
    HourCost {
        sqs_requests_per_hour: round(per.sqs_requests, 1),
        dynamodb_requests_per_hour: round(per.dynamodb_requests, 1),
        wru_per_hour: round(per.wru, 1),
        rru_per_hour: round(per.rru, 1),
        usd_per_hour: round(per.usd(prices), 6),
    }
}

/// Per-purpose cost lines, their sum and the purposes' share.
pub fn by_purpose(counts: &BTreeMap<String, Counts>, steps: u64, prices: &Prices) -> BTreeMap<String, StepCost> {
    counts.iter().map(|(k, c)| (k.clone(), step_cost(c, steps, prices))).collect()
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sqs: f64, ddb: f64, wru: f64, rru: f64) -> Counts {
        Counts { sqs_requests: sqs, dynamodb_requests: ddb, wru, rru }
    }

    #[test]
    fn dollars_per_million_steps_at_list_prices() {
        let list = Prices::default();
        // (what, counts over the run, steps, prices, $ per million steps)
        let cases: &[(&str, Counts, u64, Prices, f64)] = &[
            ("nothing", counts(0.0, 0.0, 0.0, 0.0), 100, list, 0.0),
            ("one SQS request per step", counts(100.0, 0.0, 0.0, 0.0), 100, list, 0.40),
            ("one 1 KB write per step", counts(0.0, 100.0, 100.0, 0.0), 100, list, 0.625),
            ("one 4 KB strong read per step", counts(0.0, 100.0, 0.0, 100.0), 100, list, 0.125),
            // The measurement: 0.97 SQS, 12.2 WRU, 1.6 RRU per step.
            ("issue 12 baseline", counts(562.6, 1659.0, 7076.0, 928.0), 580, list, 8.213),
            // The target: one write, batched SQS.
            ("the $1 target", counts(62.0, 100.0, 100.0, 50.0), 100, list, 0.9355),
            (
                "other prices",
                counts(100.0, 0.0, 100.0, 100.0),
                100,
                Prices { sqs_per_million: 0.5, wru_per_million: 1.25, rru_per_million: 0.25 },
                2.0,
            ),
            ("no steps: no division by zero", counts(5.0, 0.0, 0.0, 0.0), 0, list, 0.0),
        ];
        for (what, c, steps, prices, want) in cases {
            let got = step_cost(c, *steps, prices);
            assert!((got.usd_per_million_steps - want).abs() < 1e-3, "{what}: {got:?}, want {want}");
            let parts = got.usd_per_million_steps_sqs + got.usd_per_million_steps_wru + got.usd_per_million_steps_rru;
            assert!((parts - got.usd_per_million_steps).abs() < 1e-3, "{what}: parts {parts}");
        }
    }

    #[test]
    fn idle_dollars_per_hour() {
        let list = Prices::default();
        // (what, counts over the window, window in s, requests per hour, $ per hour)
        let cases: &[(&str, Counts, f64, f64, f64)] = &[
            // 3 long polls a minute on one queue.
            ("one idle queue", counts(3.0, 0.0, 0.0, 0.0), 60.0, 180.0, 0.000072),
            // A 100 ms timer poll: 600 queries a minute, 0.5 RRU each.
            ("timer poll at 100 ms", counts(0.0, 600.0, 0.0, 300.0), 60.0, 36_000.0, 0.00225),
            ("empty window", counts(3.0, 0.0, 0.0, 0.0), 0.0, 0.0, 0.0),
        ];
        for (what, c, window, want_requests, want_usd) in cases {
            let got = hour_cost(c, *window, &list);
            let requests = got.sqs_requests_per_hour + got.dynamodb_requests_per_hour;
            assert!((requests - want_requests).abs() < 1e-6, "{what}: {got:?}");
            assert!((got.usd_per_hour - want_usd).abs() < 1e-9, "{what}: {got:?}");
        }
    }
}

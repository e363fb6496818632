//! docs/scaling.md is what the scaling model's constants give: regenerate
//! it when they change (the message says how).

use std::path::Path;

use sqsaga_bench::scaling::{self, Model};

#[test]
fn docs_scaling_md_matches_the_constants() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scaling.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == scaling::markdown(&Model::current()),
        "docs/scaling.md is out of date; regenerate it:\n  {}",
        scaling::REGENERATE
    );
}

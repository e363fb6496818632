//! `docs/configuration.md` is generated from the settings table: this test
//! fails while the file and the table differ, so the reference documentation
//! can never drift from the code.

use std::path::Path;

#[test]
fn docs_configuration_md_matches_the_settings_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = sqsaga_config::docs::reference_markdown();
    assert!(
        on_disk == generated,
        "{} is out of date with the SETTINGS table; regenerate it from the workspace root with:\n  {}",
        path.display(),
        sqsaga_config::docs::REGENERATE
    );
}

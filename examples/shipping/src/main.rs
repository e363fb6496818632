//! `shipping-worker`: the shipping example's own binary. It parses three
//! flags and hands over to [`sqsaga_shipping::run`]; everything else comes
//! from the standard configuration (`SQSAGA_*`, the config file).

use std::path::PathBuf;
use std::process::ExitCode;

use sqsaga_runtime::Overrides;

const USAGE: &str = "usage: shipping-worker [--config FILE] [--data-dir DIR] [--participant-db sqlite:PATH]";

/// The flags, by hand: a service binary needs no more than these.
fn overrides(mut args: impl Iterator<Item = String>) -> Result<Overrides, String> {
    let mut o = Overrides::default();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--config" => o.config = Some(PathBuf::from(value()?)),
            "--data-dir" => o.data_dir = Some(PathBuf::from(value()?)),
            "--participant-db" => o.participant_db = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> ExitCode {
    let overrides = match overrides(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match sqsaga_shipping::run(overrides).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

//! `sqsaga sim`, as a library call: the binary parses the arguments and
//! calls [`run`], which runs the seeds and prints what a person needs — a
//! line per failing seed with its violations and the command that replays
//! it, and a summary with the rate in seeds per second.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use crate::sim::{SeedReport, SimOptions, run_seed, run_seeds};

/// What to run: one seed (`seed`, with its trace if `trace`) or `seeds`
/// seeds from `start`. Returns whether every seed passed.
pub fn run(seeds: u64, start: u64, seed: Option<u64>, trace: bool, out: &mut dyn Write) -> std::io::Result<bool> {
    let options = SimOptions { keep_trace: trace, ..SimOptions::default() };
    if let Some(seed) = seed {
        let report = run_seed(seed, &options);
        if trace {
            for line in &report.trace {
                writeln!(out, "{line}")?;
            }
        }
        print_seed(out, &report)?;
        return Ok(report.ok());
    }
    let began = Instant::now();
    let failed = run_seeds(start, seeds, &options);
    let elapsed = began.elapsed().as_secs_f64();
    for report in &failed {
        print_seed(out, report)?;
    }
    let rate = if elapsed > 0.0 { seeds as f64 / elapsed } else { 0.0 };
    writeln!(
        out,
        "{} of {seeds} seeds ({start}..{}) passed in {elapsed:.1} s ({rate:.0} seeds/s)",
        seeds - failed.len() as u64,
        start.saturating_add(seeds)
    )?;
    Ok(failed.is_empty())
}

fn print_seed(out: &mut dyn Write, r: &SeedReport) -> std::io::Result<()> {
    let verdict = if r.ok() { "ok" } else { "FAILED" };
    writeln!(
        out,
        "seed {}: {verdict} ({} steps, {:.1} s simulated, {} completed, {} compensated, trace digest {:016x})",
        r.seed,
        r.steps,
        r.simulated_ms as f64 / 1000.0,
        r.completed,
        r.compensated,
        r.digest
    )?;
    for v in &r.violations {
        writeln!(out, "  - {v}")?;
    }
    if !r.ok() {
        writeln!(out, "  replay: sqsaga sim --seed {} --trace", r.seed)?;
    }
    Ok(())
}

/// [`run`] to stdout, as the binary's exit code: 0 when every seed
/// passed, 1 when one failed, 2 when stdout could not be written. Runs on
/// a thread of its own: each seed builds its own single-threaded runtime,
/// which cannot start inside the binary's.
pub fn main(seeds: u64, start: u64, seed: Option<u64>, trace: bool) -> ExitCode {
    let ran = std::thread::scope(|s| s.spawn(|| run(seeds, start, seed, trace, &mut std::io::stdout().lock())).join());
    match ran {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("error: cannot write the report: {e}");
            ExitCode::from(2)
        }
        Err(_) => {
            eprintln!("error: the simulation panicked");
            ExitCode::from(2)
        }
    }
}

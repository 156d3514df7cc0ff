//! `lethe-bench`: benchmarks and load tests for Lethe.
#![allow(clippy::print_stdout)]

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lethe-bench",
    version,
    about = "Lethe benchmarks and load tests"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _ = Cli::parse();
    println!("lethe-bench: no benchmark yet");
    Ok(())
}

//! `hookrelay-bench`: runs hookrelay end to end on this machine and prints
//! what it sustains next to a bare HTTP ceiling measured in the same run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    hookrelay_bench::main(hookrelay_bench::Cli::parse())
}

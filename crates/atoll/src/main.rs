//! The `atoll` binary: each subcommand lives in its own module.

mod bench;
mod cli;
mod server;

fn main() -> std::process::ExitCode {
    cli::Args::parse_and_run()
}

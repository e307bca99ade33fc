//! The `atoll` binary: each subcommand lives in its own module.

// The server allocates and frees many small JSON values per request; with glibc's allocator
// a fifth of the CPU of `atoll bench apiserver` went to malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli;
mod clients;
mod clustersets;
mod deploy;
mod dev;
mod kubeconfig;
mod node;
mod output;
mod registration;
mod server;

fn main() -> std::process::ExitCode {
    cli::Args::parse_and_run()
}

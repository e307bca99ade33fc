//! Command-line surface (see DESIGN.md, "The CLI contract").

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "atoll",
    version,
    about = "A multi-cluster Kubernetes control plane"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Kubernetes API over HTTPS from a data dir.
    Server(crate::server::ServerArgs),
    /// Run a benchmark and print its figures beside its reference.
    Bench(crate::bench::BenchArgs),
    /// Print a kubeconfig for a new user, signed by a data dir's cluster CA.
    Kubeconfig(crate::kubeconfig::KubeconfigArgs),
    /// Run a node agent: register a Node and run the pods bound to it.
    Node(crate::node::NodeArgs),
    /// A hub and member clusters on this machine: `dev up`, `dev status`, `dev down`.
    Dev(crate::dev::DevArgs),
}

impl Args {
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ATOLL_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async move {
            match args.command {
                Command::Server(a) => crate::server::run(a).await,
                Command::Bench(a) => crate::bench::run(a).await,
                Command::Kubeconfig(a) => crate::kubeconfig::run(a),
                Command::Node(a) => crate::node::run(a).await,
                Command::Dev(a) => crate::dev::run(a).await,
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

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
    /// Run the hub's registration controllers; `hub token` prints a bootstrap kubeconfig.
    Hub(crate::registration::HubArgs),
    /// Run the member agent: join the hub, keep the lease, report status, rotate certificates.
    Agent(crate::registration::AgentArgs),
    /// Join this cluster to a hub: the agent, in the foreground (`--hub-kubeconfig` is the
    /// bootstrap kubeconfig from `atoll hub token`).
    Join(crate::registration::AgentArgs),
    /// Accept clusters: approve their pending CSRs and set hubAcceptsClient.
    Accept(crate::registration::AcceptArgs),
    /// Turn clusters away: deny their pending CSRs and clear hubAcceptsClient.
    Deny(crate::registration::AcceptArgs),
    /// Show state at a glance: `atoll get clusters`, `atoll get works`, `atoll get services
    /// --clusterset`, `atoll get ingresses`.
    Get(crate::registration::GetArgs),
    /// Cluster sets: `create`, `set` (move a cluster), `bind` (to a namespace), `list`.
    Clusterset(crate::clustersets::ClusterSetArgs),
    /// Workspaces: a hub namespace bound to sets, with users who may place work there.
    Workspace(crate::clustersets::WorkspaceArgs),
    /// Placements: `explain` why one picks the clusters it picks.
    Placement(crate::clustersets::PlacementArgs),
    /// Deploy Kubernetes YAML to a workspace's clusters (a ManifestWorkReplicaSet).
    Deploy(crate::deploy::DeployArgs),
    /// Remove what `atoll deploy` deployed, from every cluster.
    Undeploy(crate::deploy::UndeployArgs),
    /// Serve a cluster's DNS zone (cluster.local) from watches; forward other names.
    Dns(crate::dns::DnsArgs),
    /// Route outside traffic to exported Services as the hub's MultiClusterIngresses say.
    Gateway(crate::gateway::GatewayArgs),
    /// Peering between clusters: `token`, `add`, `request`, `approve`, `refuse`, `offload`,
    /// `list`, and `controllers` (run in each peering cluster).
    Peer(crate::peer::PeerArgs),
    /// Export a member's Service to its cluster set (a ServiceExport).
    Export(crate::services::ExportArgs),
    /// Stop exporting a member's Service.
    Unexport(crate::services::ExportArgs),
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
                Command::Dns(a) => crate::dns::run(a).await,
                Command::Gateway(a) => crate::gateway::run(a).await,
                Command::Peer(a) => crate::peer::run(a).await,
                Command::Bench(a) => crate::bench::run(a).await,
                Command::Kubeconfig(a) => crate::kubeconfig::run(a),
                Command::Node(a) => crate::node::run(a).await,
                Command::Dev(a) => crate::dev::run(a).await,
                Command::Hub(a) => crate::registration::hub(a).await,
                Command::Agent(a) | Command::Join(a) => crate::registration::agent(a).await,
                Command::Accept(a) => crate::registration::accept(a, true).await,
                Command::Deny(a) => crate::registration::accept(a, false).await,
                Command::Get(a) => crate::registration::get(a).await,
                Command::Clusterset(a) => crate::clustersets::clusterset(a).await,
                Command::Workspace(a) => crate::clustersets::workspace(a).await,
                Command::Placement(a) => crate::clustersets::placement(a).await,
                Command::Deploy(a) => crate::deploy::deploy(a).await,
                Command::Undeploy(a) => crate::deploy::undeploy(a).await,
                Command::Export(a) => crate::services::export(a).await,
                Command::Unexport(a) => crate::services::unexport(a).await,
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

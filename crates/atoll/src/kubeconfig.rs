//! `atoll kubeconfig`: print a kubeconfig for a new identity, with a client certificate issued
//! by the cluster CA of a data dir (CN = user, O = groups), so people and tests can act as
//! ordinary users. What they may do is up to RBAC.

use std::path::{Path, PathBuf};

use anyhow::Context;
use atoll_apiserver::Pki;

#[derive(clap::Args)]
pub struct KubeconfigArgs {
    /// The data dir of the `atoll server` whose CA signs the certificate.
    #[arg(long)]
    data_dir: PathBuf,
    /// User name (the certificate's CN).
    #[arg(long)]
    user: String,
    /// Groups (the certificate's O), repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Server URL; by default the one in DATA_DIR/admin.kubeconfig.
    #[arg(long)]
    server: Option<String>,
}

pub fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.user.is_empty(), "--user must not be empty");
    let server = match args.server {
        Some(s) => s,
        None => {
            let admin = args.data_dir.join("admin.kubeconfig");
            let text = std::fs::read_to_string(&admin).with_context(|| {
                format!(
                    "cannot read {} (has `atoll server` run on this data dir?); or pass --server",
                    admin.display()
                )
            })?;
            text.lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("server: ")
                        .map(|s| s.trim().to_string())
                })
                .with_context(|| format!("{} names no server; pass --server", admin.display()))?
        }
    };
    let pki = existing_pki(&args.data_dir)?;
    let cluster = server
        .trim_start_matches("https://")
        .replace([':', '.', '[', ']'], "-");
    print!(
        "{}",
        pki.kubeconfig(&server, &cluster, &args.user, &args.groups)?
    );
    Ok(())
}

/// The cluster CA of an `atoll server` data dir that has run at least once.
pub fn existing_pki(data_dir: &Path) -> anyhow::Result<Pki> {
    let pki_dir = data_dir.join("pki");
    anyhow::ensure!(
        pki_dir.join("ca.key").exists(),
        "{} has no cluster CA; start `atoll server --data-dir {}` once first",
        pki_dir.display(),
        data_dir.display()
    );
    // Loading with no extra hosts keeps the existing serving certificate's names.
    let hosts = std::fs::read_to_string(pki_dir.join("server.hosts")).unwrap_or_default();
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    Ok(Pki::load_or_create(&pki_dir, &hosts)?)
}

//! Building kube clients from kubeconfigs, and waiting for the signals that end a process.

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client for the current context of a kubeconfig given as text.
pub async fn from_yaml(yaml: &str) -> anyhow::Result<(kube::Client, kube::Config)> {
    let kc = Kubeconfig::from_yaml(yaml).context("the kubeconfig does not parse")?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("the kubeconfig is not usable")?;
    let client = kube::Client::try_from(config.clone()).context("cannot build a client")?;
    Ok((client, config))
}

/// A client from inside a pod: its service-account token and CA, the API server at
/// `KUBERNETES_SERVICE_HOST`/`PORT`.
pub fn in_cluster() -> anyhow::Result<(kube::Client, kube::Config)> {
    let config = kube::Config::incluster().context(
        "no --kubeconfig, and not in a pod (no KUBERNETES_SERVICE_HOST or service-account token)",
    )?;
    let client = kube::Client::try_from(config.clone()).context("cannot build a client")?;
    Ok((client, config))
}

/// A client for the current context of the kubeconfig at `path`.
pub async fn from_path(path: &Path) -> anyhow::Result<(kube::Client, kube::Config)> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    from_yaml(&yaml)
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))
}

/// A client as kubectl would make one: `kubeconfig` if given, else `$KUBECONFIG` or
/// `~/.kube/config`; `context` if given, else the current context.
pub async fn from_flags(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<(kube::Client, kube::Config)> {
    let kc = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p)
            .with_context(|| format!("cannot read kubeconfig {}", p.display()))?,
        None => Kubeconfig::read().context(
            "no kubeconfig: give --kubeconfig, or set KUBECONFIG (`atoll dev up` writes one)",
        )?,
    };
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .context("the kubeconfig is not usable")?;
    let client = kube::Client::try_from(config.clone()).context("cannot build a client")?;
    Ok((client, config))
}

/// The message of an API error as the server gave it (kubectl shows the same), or the error.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! `atoll export` / `atoll unexport` (a member's ServiceExport) and `atoll get services
//! --clusterset` (the hub's view of every multi-cluster service).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atoll_api::mcs::v1beta1::ServiceExport;
use atoll_api::mcs::{
    CONDITION_CONFLICT, CONDITION_READY, CONDITION_VALID, ExportedService, ImportedService,
};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The Service to export (or unexport).
    service: String,
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The member cluster (its kubeconfig and context).
    #[command(flatten)]
    target: crate::clustersets::Target,
}

fn condition(e: &ServiceExport, type_: &str) -> Option<(String, String, String)> {
    e.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// `atoll export SERVICE -n NS`: a ServiceExport, and what the hub made of it.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    let (ns, name) = (args.namespace.as_str(), args.service.as_str());
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    if services.get_opt(name).await?.is_none() {
        bail!("there is no Service {ns}/{name} to export in this cluster");
    }
    let exports: Api<ServiceExport> = Api::namespaced(client.clone(), ns);
    let export: ServiceExport = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns},
    }))?;
    match exports.create(&PostParams::default(), &export).await {
        Ok(_) => println!("serviceexport.multicluster.x-k8s.io/{name} created"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            println!("serviceexport.multicluster.x-k8s.io/{name} exists already")
        }
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "this cluster has no ServiceExport API (multicluster.x-k8s.io): is it a member with an Atoll agent?"
        ),
        Err(e) => return Err(e.into()),
    }
    // What the agent and the hub say, within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = exports.get(name).await?;
        // A Service of another type does not change; a missing one may be the agent's view
        // lagging behind the Service just made, so that is said only if it lasts.
        if let Some((status, reason, message)) = condition(&current, CONDITION_VALID)
            && status == "False"
            && (reason != atoll_api::mcs::REASON_NO_SERVICE || Instant::now() > deadline)
        {
            bail!("the export is not valid ({reason}): {message}");
        }
        let ready = condition(&current, CONDITION_READY);
        if ready.as_ref().is_some_and(|(s, _, _)| s == "True") {
            let conflict = condition(&current, CONDITION_CONFLICT)
                .filter(|(s, _, _)| s == "True")
                .map(|(_, r, m)| format!("conflict ({r}): {m}"))
                .unwrap_or_else(|| "no conflicts".into());
            println!("exported to the cluster set; {conflict}");
            return Ok(());
        }
        if Instant::now() > deadline {
            let why = ready
                .map(|(_, r, m)| format!("{r}: {m}"))
                .unwrap_or_else(|| "no conditions yet (is the cluster's agent running?)".into());
            println!(
                "not ready yet ({why}); `kubectl get serviceexport {name} -n {ns} -o yaml` shows its conditions"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `atoll unexport SERVICE -n NS`.
pub async fn unexport(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    let exports: Api<ServiceExport> = Api::namespaced(client, &args.namespace);
    match exports
        .delete(&args.service, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            println!(
                "serviceexport.multicluster.x-k8s.io/{} deleted",
                args.service
            );
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "{}/{} is not exported from this cluster",
            args.namespace,
            args.service
        ),
        Err(e) => Err(e.into()),
    }
}

/// `atoll get services --clusterset` on the hub: per multi-cluster service and set, its type,
/// ClusterSetIP, exporting clusters, ready endpoints per cluster (a withdrawn cluster shows
/// 0) and conflicts.
pub async fn get_services(client: &Client) -> anyhow::Result<()> {
    let imports: Api<ImportedService> = Api::all(client.clone());
    let imports = match imports.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "this cluster serves no ImportedServices (networking.atoll.io): is it a hub? `atoll hub` installs them"
        ),
        other => other.context("cannot list the hub's imports")?,
    };
    let exports: Api<ExportedService> = Api::all(client.clone());
    let exports = exports.list(&ListParams::default()).await?;
    // One row per (set, namespace, name): every member holds the same import.
    let mut rows: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for i in imports.items {
        let spec = &i.spec;
        let key = (
            spec.cluster_set.clone(),
            spec.namespace.clone(),
            spec.name.clone(),
        );
        if rows.contains_key(&key) {
            continue;
        }
        let ready: Vec<String> = spec
            .clusters
            .iter()
            .map(|c| {
                let n: usize = c
                    .slices
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                    .map(|e| e.addresses.len())
                    .sum();
                format!("{}={n}", c.cluster)
            })
            .collect();
        let conflicts: Vec<String> = exports
            .items
            .iter()
            .filter(|e| e.spec.namespace == spec.namespace && e.spec.name == spec.name)
            .filter_map(|e| {
                let c = e
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == CONDITION_CONFLICT)?;
                (c.status == "True").then(|| format!("{}:{}", e.spec.cluster, c.reason))
            })
            .collect();
        rows.insert(
            key.clone(),
            vec![
                key.0,
                key.1,
                key.2,
                spec.service.type_.clone(),
                spec.service
                    .ips
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "None".into()),
                spec.clusters
                    .iter()
                    .map(|c| c.cluster.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                ready.join(","),
                if conflicts.is_empty() {
                    "-".into()
                } else {
                    conflicts.join(",")
                },
            ],
        );
    }
    let mut table = vec![
        [
            "CLUSTERSET",
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTERSET-IP",
            "EXPORTED-BY",
            "READY",
            "CONFLICTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    table.extend(rows.into_values());
    if table.len() == 1 {
        println!("No multi-cluster services.");
        return Ok(());
    }
    crate::output::print_table(&table);
    Ok(())
}

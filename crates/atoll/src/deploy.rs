//! `atoll deploy`, `atoll undeploy` and `atoll get works`: plain Kubernetes YAML onto the
//! clusters of a workspace, as a ManifestWorkReplicaSet over a Placement (made here when a set
//! is named), and how its works are doing at a glance. Done as the caller: a workspace user
//! needs nothing more than `atoll:workspace-user`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use atoll_api::work::{ManifestWork, ManifestWorkReplicaSet, REPLICASET_LABEL};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::clients::api_message;

/// Label on the Placements `atoll deploy` made: `atoll undeploy` removes them too.
const DEPLOYED_BY_LABEL: &str = "work.atoll.io/deployed-by";
const MANAGER: &str = "atoll-deploy";

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Kubernetes YAML (or JSON) files, each of one or more documents; repeatable.
    #[arg(long = "filename", short = 'f', required = true)]
    files: Vec<PathBuf>,
    /// The workspace (hub namespace) to deploy from.
    #[arg(long)]
    workspace: String,
    /// An existing Placement of the workspace that picks the clusters.
    #[arg(long, conflicts_with = "clusterset")]
    placement: Option<String>,
    /// A cluster set bound to the workspace: a Placement over it is made (named as the app).
    #[arg(long, required_unless_present = "placement")]
    clusterset: Option<String>,
    /// With --clusterset: how many of its clusters (default: all).
    #[arg(long, requires = "clusterset")]
    clusters: Option<i32>,
    /// The app's name (default: the first manifest's name).
    #[arg(long)]
    name: Option<String>,
    /// `all` (every cluster at once) or `progressive` (a few at a time).
    #[arg(long, default_value = "all")]
    rollout: String,
    /// With --rollout progressive: clusters at once (a number or a percentage).
    #[arg(long)]
    max_concurrency: Option<String>,
    /// With --rollout progressive: how long a cluster stays healthy before the next start.
    #[arg(long)]
    min_success_time: Option<String>,
    /// A cluster not healthy this long after its work was written has failed (e.g. 5m).
    #[arg(long)]
    progress_deadline: Option<String>,
    /// How many clusters may fail before a progressive rollout stops (default 0).
    #[arg(long)]
    max_failures: Option<String>,
    #[command(flatten)]
    target: crate::clustersets::Target,
}

#[derive(clap::Args)]
pub struct UndeployArgs {
    name: String,
    #[arg(long)]
    workspace: String,
    #[command(flatten)]
    target: crate::clustersets::Target,
}

/// The documents of a YAML or JSON file (a `List` gives its items).
pub fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("not YAML or JSON")?;
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn int_or_string(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    }
}

/// The ManifestWorkReplicaSet for `manifests`: their status fed back for the kinds OCM knows.
pub fn replica_set(
    args: &DeployArgs,
    name: &str,
    placement: &str,
    manifests: &[Value],
) -> anyhow::Result<Value> {
    let configs: Vec<Value> = manifests
        .iter()
        .filter_map(|m| {
            let (group, resource) = match (m["apiVersion"].as_str()?, m["kind"].as_str()?) {
                ("apps/v1", "Deployment") => ("apps", "deployments"),
                ("apps/v1", "DaemonSet") => ("apps", "daemonsets"),
                ("apps/v1", "StatefulSet") => ("apps", "statefulsets"),
                ("batch/v1", "Job") => ("batch", "jobs"),
                _ => return None,
            };
            Some(json!({
                "resourceIdentifier": {"group": group, "resource": resource,
                    "namespace": m["metadata"]["namespace"].as_str().unwrap_or("default"),
                    "name": m["metadata"]["name"]},
                "feedbackRules": [{"type": "WellKnownStatus"}],
            }))
        })
        .collect();
    let mut strategy = match args.rollout.as_str() {
        "all" => json!({"type": "All"}),
        "progressive" => {
            let mut p = json!({});
            if let Some(c) = &args.max_concurrency {
                p["maxConcurrency"] = int_or_string(c);
            }
            if let Some(t) = &args.min_success_time {
                p["minSuccessTime"] = json!(t);
            }
            if let Some(f) = &args.max_failures {
                p["maxFailures"] = int_or_string(f);
            }
            json!({"type": "Progressive", "progressive": p})
        }
        other => bail!("--rollout {other}: must be all or progressive"),
    };
    if let Some(d) = &args.progress_deadline {
        let field = if args.rollout == "all" {
            "all"
        } else {
            "progressive"
        };
        if strategy[field].is_null() {
            strategy[field] = json!({});
        }
        strategy[field]["progressDeadline"] = json!(d);
    }
    Ok(json!({
        "apiVersion": "work.atoll.io/v1alpha1", "kind": "ManifestWorkReplicaSet",
        "metadata": {"name": name, "namespace": args.workspace},
        "spec": {
            "manifestWorkTemplate": {"workload": {"manifests": manifests}, "manifestConfigs": configs},
            "placementRefs": [{"name": placement, "rolloutStrategy": strategy}],
        },
    }))
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    let mut manifests = Vec::new();
    for f in &args.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        manifests.extend(documents(&text).with_context(|| f.display().to_string())?);
    }
    anyhow::ensure!(!manifests.is_empty(), "the files hold no manifests");
    let name = match &args.name {
        Some(n) => n.clone(),
        // The first workload's (or anything's but a namespace's) name, else the first name.
        None => manifests
            .iter()
            .filter(|m| m["kind"] != "Namespace")
            .chain(manifests.iter())
            .find_map(|m| m["metadata"]["name"].as_str().map(String::from))
            .context("no manifest has a name; give --name")?,
    };
    let ns = &args.workspace;
    let placement = match (&args.placement, &args.clusterset) {
        (Some(p), _) => p.clone(),
        (None, Some(set)) => {
            let mut spec = json!({"clusterSets": [set]});
            if let Some(n) = args.clusters {
                spec["numberOfClusters"] = json!(n);
            }
            let p = json!({"apiVersion": "cluster.atoll.io/v1alpha1", "kind": "Placement",
                "metadata": {"name": name, "namespace": ns, "labels": {DEPLOYED_BY_LABEL: "atoll-deploy"}},
                "spec": spec});
            Api::<atoll_api::placement::Placement>::namespaced(client.clone(), ns)
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&p),
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot make placement {name} in {ns}: {}", api_message(&e))
                })?;
            println!("placement.cluster.atoll.io/{name} over cluster set {set}");
            name.clone()
        }
        (None, None) => bail!("give --placement or --clusterset"),
    };
    let rs = replica_set(&args, &name, &placement, &manifests)?;
    Api::<ManifestWorkReplicaSet>::namespaced(client, ns)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&rs),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot deploy {name} in {ns}: {}", api_message(&e)))?;
    println!(
        "manifestworkreplicaset.work.atoll.io/{name} deployed: {} manifest(s) to the clusters placement {placement} picks ({} rollout)",
        manifests.len(),
        args.rollout
    );
    Ok(())
}

pub async fn undeploy(args: UndeployArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    let ns = &args.workspace;
    let name = &args.name;
    match Api::<ManifestWorkReplicaSet>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => println!(
            "manifestworkreplicaset.work.atoll.io/{name} deleted (its works are removed from every cluster)"
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            bail!("nothing named {name} is deployed in {ns}")
        }
        Err(e) => bail!("cannot undeploy {name}: {}", api_message(&e)),
    }
    let placements: Api<atoll_api::placement::Placement> = Api::namespaced(client, ns);
    if let Ok(Some(p)) = placements.get_opt(name).await
        && p.labels().get(DEPLOYED_BY_LABEL).is_some()
    {
        placements
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("cannot remove placement {name}: {}", api_message(&e)))?;
        println!("placement.cluster.atoll.io/{name} deleted");
    }
    Ok(())
}

/// `atoll get works`: per replica set and cluster, then works of no replica set (for those
/// who may read cluster namespaces).
pub async fn get_works(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let sets: Vec<ManifestWorkReplicaSet> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
    .list(&ListParams::default())
    .await
    .map_err(|e| anyhow::anyhow!("cannot list replica sets: {}", api_message(&e)))?
    .items;
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "CLUSTER",
            "ROLLOUT",
            "APPLIED",
            "AVAILABLE",
            "FEEDBACK",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for rs in &sets {
        let status = rs.status.clone().unwrap_or_default();
        let mut any = false;
        for p in &status.placement_summary {
            for c in &p.clusters {
                any = true;
                let rollout = if c.message.is_empty() {
                    c.status.clone()
                } else {
                    format!("{} ({})", c.status, c.message)
                };
                rows.push(vec![
                    rs.namespace().unwrap_or_default(),
                    rs.name_any(),
                    c.cluster_name.clone(),
                    rollout,
                    c.applied.clone(),
                    c.available.clone(),
                    c.feedback.clone(),
                ]);
            }
        }
        if !any {
            let why = status
                .conditions
                .iter()
                .find(|c| c.type_ == "PlacementVerified" && c.status != "True")
                .map(|c| c.message.clone())
                .unwrap_or_else(|| "no cluster decided yet".into());
            rows.push(vec![
                rs.namespace().unwrap_or_default(),
                rs.name_any(),
                "<none>".into(),
                why,
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    // Works of no replica set, where the caller may see them.
    let works: Option<Vec<ManifestWork>> = match namespace {
        Some(ns) if ns.starts_with("atoll-cluster-") => {
            Api::<ManifestWork>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .ok()
                .map(|l| l.items)
        }
        Some(_) => None,
        None => Api::<ManifestWork>::all(client.clone())
            .list(&ListParams::default())
            .await
            .ok()
            .map(|l| l.items),
    };
    for w in works.into_iter().flatten() {
        if w.labels().contains_key(REPLICASET_LABEL) {
            continue;
        }
        let cond = |t: &str| {
            w.status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
                .map(|c| c.status.clone())
                .unwrap_or_default()
        };
        let ns = w.namespace().unwrap_or_default();
        rows.push(vec![
            ns.clone(),
            w.name_any(),
            ns.strip_prefix("atoll-cluster-").unwrap_or(&ns).to_string(),
            "-".into(),
            cond("Applied"),
            cond("Available"),
            atoll_hub::replicaset::feedback_of(&w),
        ]);
    }
    if rows.len() == 1 {
        println!("No works found.");
        return Ok(());
    }
    crate::output::print_table(&rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_give_their_documents() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: b}}\n";
        let docs = documents(text).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ConfigMap", "Service"]);
    }
}

//! `atoll clusterset create|set|bind|list`, `atoll workspace create|list` and
//! `atoll placement explain`: sets, membership, bindings and workspaces on the hub, each done
//! as the caller (the hub's webhooks and RBAC decide), and why a placement picks what it picks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use atoll_api::cluster::ManagedCluster;
use atoll_api::clusterset::{
    CLUSTERSET_LABEL, ManagedClusterSelector, ManagedClusterSet, ManagedClusterSetBinding,
    ManagedClusterSetBindingSpec, ManagedClusterSetSpec, SelectorType,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::clients::api_message;

/// Which hub to talk to, as kubectl's flags.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Kubeconfig of the hub (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context of the hub (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
}

impl Target {
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        Ok(
            crate::clients::from_flags(self.kubeconfig.as_deref(), self.context.as_deref())
                .await?
                .0,
        )
    }
}

#[derive(clap::Args)]
pub struct ClusterSetArgs {
    #[command(subcommand)]
    command: ClusterSetCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum ClusterSetCommand {
    /// Create a set: members by the label cluster.atoll.io/clusterset=NAME, or with --selector
    /// every cluster whose labels match.
    Create {
        name: String,
        /// Labels the members have, k=v,...: a LabelSelector set.
        #[arg(long)]
        selector: Option<String>,
    },
    /// Move a cluster into a set (needs `create` on `managedclustersets/join` for the old and
    /// the new set).
    Set { cluster: String, set: String },
    /// Bind a set to a namespace, so Placements there may pick its clusters (needs `create` on
    /// `managedclustersets/bind`).
    Bind {
        set: String,
        #[arg(long, short = 'n')]
        namespace: String,
    },
    /// The sets, their type and their members.
    List,
}

#[derive(clap::Args)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    command: WorkspaceCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum WorkspaceCommand {
    /// A namespace on the hub bound to sets, whose users may place work on their clusters.
    Create {
        name: String,
        /// A set the workspace may use; repeatable.
        #[arg(long = "clusterset", required = true)]
        clustersets: Vec<String>,
        /// A user of the workspace; repeatable.
        #[arg(long = "user")]
        users: Vec<String>,
        /// A group of users of the workspace; repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// The workspaces, their sets and their users.
    List,
}

#[derive(clap::Args)]
pub struct PlacementArgs {
    #[command(subcommand)]
    command: PlacementCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum PlacementCommand {
    /// Why a placement picks the clusters it picks: every cluster of its sets with the filter
    /// that left it out, or its scores; with -f, a dry run of a placement not yet created.
    Explain {
        name: Option<String>,
        #[arg(long, short = 'n')]
        namespace: String,
        /// A Placement manifest (YAML or JSON) to explain without creating it.
        #[arg(long, short = 'f')]
        filename: Option<PathBuf>,
        /// `json` for the whole explanation.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
}

/// The label of namespaces made by `atoll workspace create`.
const WORKSPACE_LABEL: &str = "cluster.atoll.io/workspace";

pub async fn clusterset(args: ClusterSetArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    match args.command {
        ClusterSetCommand::Create { name, selector } => {
            let spec = match selector {
                None => ManagedClusterSetSpec::default(),
                Some(s) => ManagedClusterSetSpec {
                    cluster_selector: ManagedClusterSelector {
                        selector_type: SelectorType::LabelSelector,
                        label_selector: Some(LabelSelector {
                            match_labels: Some(
                                atoll_api::selector::parse_equality(&s)
                                    .map_err(|e| anyhow::anyhow!("--selector: {e}"))?,
                            ),
                            ..Default::default()
                        }),
                    },
                },
            };
            let api: Api<ManagedClusterSet> = Api::all(client);
            api.create(&PostParams::default(), &ManagedClusterSet::new(&name, spec))
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot create cluster set {name}: {}", api_message(&e))
                })?;
            println!("managedclusterset.cluster.atoll.io/{name} created");
        }
        ClusterSetCommand::Set { cluster, set } => {
            let api: Api<ManagedCluster> = Api::all(client);
            api.patch(
                &cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {CLUSTERSET_LABEL: set}}})),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot move cluster {cluster} into set {set}: {}",
                    api_message(&e)
                )
            })?;
            println!("managedcluster.cluster.atoll.io/{cluster} moved to cluster set {set}");
        }
        ClusterSetCommand::Bind { set, namespace } => {
            bind(&client, &set, &namespace).await?;
        }
        ClusterSetCommand::List => list_sets(&client).await?,
    }
    Ok(())
}

/// Create the binding of `set` in `namespace` (nothing if it exists).
async fn bind(client: &Client, set: &str, namespace: &str) -> anyhow::Result<()> {
    let api: Api<ManagedClusterSetBinding> = Api::namespaced(client.clone(), namespace);
    let mut b = ManagedClusterSetBinding::new(
        set,
        ManagedClusterSetBindingSpec {
            cluster_set: set.to_string(),
        },
    );
    b.metadata.namespace = Some(namespace.to_string());
    match api.create(&PostParams::default(), &b).await {
        Ok(_) => println!("managedclustersetbinding.cluster.atoll.io/{set} created in {namespace}"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            println!("managedclustersetbinding.cluster.atoll.io/{set} unchanged in {namespace}")
        }
        Err(e) => bail!(
            "cannot bind cluster set {set} to namespace {namespace}: {}",
            api_message(&e)
        ),
    }
    Ok(())
}

async fn list_sets(client: &Client) -> anyhow::Result<()> {
    let sets = match Api::<ManagedClusterSet>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "this cluster serves no ManagedClusterSets (cluster.atoll.io/v1alpha1): is it a hub? `atoll hub` installs them"
        ),
        other => {
            other.map_err(|e| anyhow::anyhow!("cannot list cluster sets: {}", api_message(&e)))?
        }
    };
    // Members are worked out here when the caller may list clusters; otherwise the count the
    // hub keeps in each set's status is all there is.
    let clusters = Api::<ManagedCluster>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok();
    let mut rows = vec![
        ["NAME", "TYPE", "SELECTOR", "MEMBERS", "CLUSTERS"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &sets.items {
        let selector = match s.spec.cluster_selector.selector_type {
            SelectorType::ExclusiveClusterSetLabel => {
                format!("{CLUSTERSET_LABEL}={}", s.name_any())
            }
            SelectorType::LabelSelector => match &s.spec.cluster_selector.label_selector {
                None => "<none>".into(),
                Some(l) => selector_text(l),
            },
        };
        let (count, names) = match &clusters {
            Some(list) => {
                let names: Vec<String> = list
                    .items
                    .iter()
                    .filter(|c| s.selects(c.labels()))
                    .map(|c| c.name_any())
                    .collect();
                (names.len().to_string(), names.join(","))
            }
            None => (
                s.status
                    .as_ref()
                    .map_or(0, |st| st.member_count)
                    .to_string(),
                "<not allowed to list clusters>".into(),
            ),
        };
        rows.push(vec![
            s.name_any(),
            format!("{:?}", s.spec.cluster_selector.selector_type),
            selector,
            count,
            if names.is_empty() {
                "<none>".into()
            } else {
                names
            },
        ]);
    }
    crate::output::print_table(&rows);
    Ok(())
}

fn selector_text(l: &LabelSelector) -> String {
    let mut parts: Vec<String> = l
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in l.match_expressions.iter().flatten() {
        parts.push(format!(
            "{} {} ({})",
            e.key,
            e.operator,
            e.values.clone().unwrap_or_default().join(",")
        ));
    }
    if parts.is_empty() {
        "<everything>".into()
    } else {
        parts.join(",")
    }
}

pub async fn workspace(args: WorkspaceArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    match args.command {
        WorkspaceCommand::Create {
            name,
            clustersets,
            users,
            groups,
        } => create_workspace(&client, &name, &clustersets, &users, &groups).await,
        WorkspaceCommand::List => list_workspaces(&client).await,
    }
}

async fn create_workspace(
    client: &Client,
    name: &str,
    sets: &[String],
    users: &[String],
    groups: &[String],
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {WORKSPACE_LABEL: "true"}}});
    namespaces
        .patch(name, &PatchParams::apply("atoll"), &Patch::Apply(&ns))
        .await
        .map_err(|e| anyhow::anyhow!("cannot create namespace {name}: {}", api_message(&e)))?;
    println!("namespace/{name} ready");
    for set in sets {
        bind(client, set, name).await?;
    }
    let subjects: Vec<Value> =
        users
            .iter()
            .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
            .chain(groups.iter().map(
                |g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}),
            ))
            .collect();
    if !subjects.is_empty() {
        let role = atoll_hub::WORKSPACE_USER_ROLE;
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects});
        Api::<RoleBinding>::namespaced(client.clone(), name)
            .patch(role, &PatchParams::apply("atoll"), &Patch::Apply(&binding))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot give the workspace's users {role} in {name}: {}",
                    api_message(&e)
                )
            })?;
        println!(
            "rolebinding.rbac.authorization.k8s.io/{role} in {name}: {}",
            users
                .iter()
                .map(|u| format!("user {u}"))
                .chain(groups.iter().map(|g| format!("group {g}")))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

async fn list_workspaces(client: &Client) -> anyhow::Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{WORKSPACE_LABEL}=true")))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list namespaces: {}", api_message(&e)))?;
    let mut rows = vec![["NAME", "CLUSTERSETS", "USERS"].map(String::from).to_vec()];
    for ns in namespaces.items {
        let name = ns.name_any();
        let bindings = Api::<ManagedClusterSetBinding>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|b| b.spec.cluster_set.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let users = Api::<RoleBinding>::namespaced(client.clone(), &name)
            .get_opt(atoll_hub::WORKSPACE_USER_ROLE)
            .await
            .ok()
            .flatten()
            .and_then(|b| b.subjects)
            .map(|s| {
                s.iter()
                    .map(|s| {
                        if s.kind == "Group" {
                            format!("group:{}", s.name)
                        } else {
                            s.name.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push(vec![name, bindings, users]);
    }
    crate::output::print_table(&rows);
    Ok(())
}

pub async fn placement(args: PlacementArgs) -> anyhow::Result<()> {
    let PlacementCommand::Explain {
        name,
        namespace,
        filename,
        output,
    } = args.command;
    let (client, config) = crate::clients::from_flags(
        args.target.kubeconfig.as_deref(),
        args.target.context.as_deref(),
    )
    .await?;
    let mut request = json!({"namespace": namespace, "name": name});
    match (&name, &filename) {
        (Some(_), Some(_)) => bail!("give a placement's name or -f FILE, not both"),
        (None, None) => bail!("give a placement's name, or -f FILE for a dry run"),
        (_, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let placement: Value = serde_saphyr::from_str(&text)
                .with_context(|| format!("{} is not YAML or JSON", f.display()))?;
            if placement["kind"] != "Placement" {
                bail!(
                    "{} holds a {}, not a Placement",
                    f.display(),
                    placement["kind"]
                        .as_str()
                        .unwrap_or("document without a kind")
                );
            }
            request["placement"] = placement;
        }
        _ => {}
    }
    // Where the hub serves explain, and the certificate it serves it with.
    let endpoint = Api::<ConfigMap>::namespaced(client, atoll_hub::explain::ENDPOINT_NAMESPACE)
        .get_opt(atoll_hub::explain::ENDPOINT_CONFIGMAP)
        .await
        .map_err(|e| anyhow::anyhow!("cannot find the hub's explain endpoint: {}", api_message(&e)))?
        .and_then(|c| c.data)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the hub publishes no explain endpoint (ConfigMap kube-public/atoll-hub): is `atoll hub` running with --webhook-listen?"
            )
        })?;
    let url = endpoint
        .get("explain-url")
        .context("ConfigMap kube-public/atoll-hub has no explain-url")?;
    let ca = endpoint
        .get("ca.crt")
        .context("ConfigMap kube-public/atoll-hub has no ca.crt")?;
    // The caller's own credentials (certificate or token), sent to the hub instead of the API
    // server; the hub checks them and asks the API server what the caller may see.
    let mut hub_config = config;
    let uri: http::Uri = url.parse().context("the explain URL")?;
    hub_config.cluster_url = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
    .parse()
    .context("the explain URL")?;
    hub_config.root_cert = Some(pem_ders(ca)?);
    hub_config.tls_server_name = None;
    let hub = Client::try_from(hub_config).context("cannot reach the hub")?;
    let req = http::Request::post(uri.path())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(request.to_string().into_bytes())
        .context("the explain request")?;
    let text = hub.request_text(req).await.map_err(|e| match e {
        kube::Error::Api(s) => anyhow::anyhow!("{}", s.message),
        other => anyhow::anyhow!("the hub's explain endpoint: {other}"),
    })?;
    let answer: Value = serde_json::from_str(&text).context("the hub's answer is not JSON")?;
    if output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", render(&answer));
    }
    Ok(())
}

fn pem_ders(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                body.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(body.as_bytes())
                        .context("the hub's CA certificate")?,
                );
            }
            l if inside => body.push_str(l),
            _ => {}
        }
    }
    anyhow::ensure!(!out.is_empty(), "the hub's CA is not a PEM certificate");
    Ok(out)
}

/// The explanation as a person reads it.
pub fn render(a: &Value) -> String {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    let mut out = String::new();
    let title = match a["name"].as_str() {
        Some(n) => format!(
            "Placement {}/{n}",
            a["namespace"].as_str().unwrap_or_default()
        ),
        None => format!(
            "Placement (dry run) in {}",
            a["namespace"].as_str().unwrap_or_default()
        ),
    };
    out.push_str(&format!(
        "{title}\n  bound sets: {}\n  eligible sets: {}\n",
        list_or_none(&strs(&a["boundSets"])),
        list_or_none(&strs(&a["eligibleSets"]))
    ));
    if let Some(m) = a["misconfigured"].as_str() {
        out.push_str(&format!(
            "  MISCONFIGURED: {m}\n  (the hub keeps its previous decisions until it is fixed)\n"
        ));
        return out;
    }
    let prioritizers: Vec<(String, i64)> = a["prioritizers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["weight"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let decisions = strs(&a["decisions"]);
    let filtered: BTreeMap<String, String> = a["filtered"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["cluster"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{}: {}",
                    f["filter"].as_str().unwrap_or_default(),
                    f["reason"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect();
    let refused = strs(&a["spreadRefused"]);
    let mut header = vec!["CLUSTER".to_string(), "SETS".into(), "RESULT".into()];
    header.extend(
        prioritizers
            .iter()
            .map(|(n, w)| format!("{}(x{w})", n.to_uppercase())),
    );
    header.push("TOTAL".into());
    let mut rows = vec![header];
    for c in a["clusters"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let result = if c["terminating"] == true {
            "not a candidate: terminating".to_string()
        } else if let Some(why) = filtered.get(&name) {
            format!("filtered by {why}")
        } else if let Some(i) = decisions.iter().position(|d| *d == name) {
            format!("picked #{}", i + 1)
        } else if refused.contains(&name) {
            "not picked: a DoNotSchedule spread constraint".into()
        } else {
            "not picked: others scored higher".into()
        };
        let mut row = vec![name.clone(), strs(&c["sets"]).join(","), result];
        for p in a["prioritizers"].as_array().into_iter().flatten() {
            row.push(
                p["scores"][&name]
                    .as_i64()
                    .map_or("-".into(), |s| s.to_string()),
            );
        }
        row.push(
            a["total"][&name]
                .as_i64()
                .map_or("-".into(), |s| s.to_string()),
        );
        rows.push(row);
    }
    out.push_str(&crate::output::table(&rows));
    out.push_str(&format!("Decisions: {}\n", list_or_none(&decisions)));
    for (i, g) in a["groups"].as_array().into_iter().flatten().enumerate() {
        let name = g["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("-");
        out.push_str(&format!(
            "  group {i} ({name}): {}\n",
            list_or_none(&strs(&g["clusters"]))
        ));
    }
    out.push_str(&format!(
        "PlacementSatisfied: {} ({}): {}\n",
        a["satisfied"]["status"].as_str().unwrap_or_default(),
        a["satisfied"]["reason"].as_str().unwrap_or_default(),
        a["satisfied"]["message"].as_str().unwrap_or_default()
    ));
    out
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(", ")
    }
}

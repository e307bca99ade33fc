//! The built-in kinds, declared in one table. Adding a kind is one entry here and, where it
//! needs them, a few lines of validation or field selectors.

use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::api::{
    admissionregistration::v1 as admission, apps::v1 as apps, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Cause;
use crate::registry::{NormalizeError, ResourceType, ScalePaths, Strategy};
use crate::table::Column;
use crate::validation::NameRule;

/// A built-in kind's strategy: the k8s-openapi type decodes and re-encodes the object, which
/// type-checks every field and drops unknown ones, as kube-apiserver's decoding does.
struct Typed<T> {
    validate: fn(&Value, Option<&Value>, &mut Vec<Cause>),
    fields: &'static [&'static str],
    columns: fn() -> Vec<Column>,
    /// The OpenAPI schema, made on the first OpenAPI request (some 100 KB per kind: not
    /// worth making at every start).
    schema: std::sync::OnceLock<Option<Value>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Serialize + schemars::JsonSchema> Strategy for Typed<T> {
    fn normalize(&self, obj: &Value) -> Result<Value, NormalizeError> {
        let typed = T::deserialize(obj).map_err(|e| NormalizeError::Decode(e.to_string()))?;
        serde_json::to_value(typed).map_err(|e| NormalizeError::Decode(e.to_string()))
    }
    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        (self.validate)(obj, old, causes)
    }
    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        if !self.fields.contains(&field) {
            return None;
        }
        let pointer = format!("/{}", field.replace('.', "/"));
        Some(match obj.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        })
    }
    fn fields(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.to_string()).collect()
    }
    fn columns(&self) -> Vec<Column> {
        (self.columns)()
    }
    fn openapi_schema(&self) -> Option<Value> {
        self.schema
            .get_or_init(|| {
                // Inlined, as one kind's document stands alone in the OpenAPI v3 per group.
                let schema = schemars::generate::SchemaSettings::openapi3()
                    .with(|s| s.inline_subschemas = true)
                    .into_generator()
                    .into_root_schema_for::<T>();
                let mut schema = serde_json::to_value(schema).ok()?;
                if let Some(m) = schema.as_object_mut() {
                    m.remove("$schema");
                    m.remove("title");
                }
                Some(schema)
            })
            .clone()
    }
}

fn no_validation(_: &Value, _: Option<&Value>, _: &mut Vec<Cause>) {}
fn no_columns() -> Vec<Column> {
    Vec::new()
}

struct Decl {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
    name_rule: NameRule,
    strategy: Arc<dyn Strategy>,
    review: bool,
}

impl Decl {
    /// A create-only review kind of `group`, answered by `reviews.rs`.
    fn review(
        group: &'static str,
        resource: &'static str,
        kind: &'static str,
        namespaced: bool,
    ) -> Decl {
        Decl {
            group,
            version: "v1",
            resource,
            kind,
            namespaced,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: NameRule::PathSegment,
            strategy: typed::<Value>(no_validation, &[], no_columns),
            review: true,
        }
    }
}

fn typed<T: DeserializeOwned + Serialize + schemars::JsonSchema + 'static>(
    validate: fn(&Value, Option<&Value>, &mut Vec<Cause>),
    fields: &'static [&'static str],
    columns: fn() -> Vec<Column>,
) -> Arc<dyn Strategy> {
    Arc::new(Typed::<T> {
        validate,
        fields,
        columns,
        schema: std::sync::OnceLock::new(),
        _t: PhantomData,
    })
}

/// Every built-in kind the server serves.
pub fn builtin() -> Vec<Arc<ResourceType>> {
    use NameRule::*;
    let all = &["all"];
    let decls = vec![
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "namespaces",
            kind: "Namespace",
            namespaced: false,
            short_names: &["ns"],
            categories: &[],
            status: true,
            scale: false,
            name_rule: Label,
            strategy: typed::<core::Namespace>(validate_namespace, &["status.phase"], || {
                vec![Column::text(
                    "Status",
                    "/status/phase",
                    "The phase of the namespace",
                )]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "configmaps",
            kind: "ConfigMap",
            namespaced: true,
            short_names: &["cm"],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::ConfigMap>(validate_configmap, &[], || {
                vec![Column::count(
                    "Data",
                    &["/data", "/binaryData"],
                    "Number of keys",
                )]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "secrets",
            kind: "Secret",
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::Secret>(validate_secret, &["type"], || {
                vec![
                    Column::text("Type", "/type", "The type of the secret"),
                    Column::count("Data", &["/data"], "Number of keys"),
                ]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "serviceaccounts",
            kind: "ServiceAccount",
            namespaced: true,
            short_names: &["sa"],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::ServiceAccount>(no_validation, &[], no_columns),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "persistentvolumeclaims",
            kind: "PersistentVolumeClaim",
            namespaced: true,
            short_names: &["pvc"],
            categories: &[],
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::PersistentVolumeClaim>(validate_pvc, &[], || {
                vec![
                    Column::text("Status", "/status/phase", "Whether a volume is bound"),
                    Column::text("Volume", "/spec/volumeName", "The bound volume"),
                    Column::text("Capacity", "/status/capacity/storage", "The volume's size"),
                    Column::computed(
                        "Access Modes",
                        crate::table::access_modes,
                        "How it may be mounted",
                    ),
                    Column::text("StorageClass", "/spec/storageClassName", "Its class"),
                ]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "persistentvolumes",
            kind: "PersistentVolume",
            namespaced: false,
            short_names: &["pv"],
            categories: &[],
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::PersistentVolume>(no_validation, &[], || {
                vec![
                    Column::text("Capacity", "/spec/capacity/storage", "Its size"),
                    Column::computed(
                        "Access Modes",
                        crate::table::access_modes,
                        "How it may be mounted",
                    ),
                    Column::text(
                        "Reclaim Policy",
                        "/spec/persistentVolumeReclaimPolicy",
                        "What happens when its claim goes",
                    ),
                    Column::text("Status", "/status/phase", "Bound or not"),
                    Column::computed("Claim", crate::table::pv_claim, "The claim bound to it"),
                    Column::text("StorageClass", "/spec/storageClassName", "Its class"),
                ]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "services",
            kind: "Service",
            namespaced: true,
            short_names: &["svc"],
            categories: all,
            status: true,
            scale: false,
            name_rule: Label,
            strategy: typed::<core::Service>(
                validate_service,
                &["spec.clusterIP", "spec.type"],
                || {
                    vec![
                        Column::text("Type", "/spec/type", "The type of the service"),
                        Column::text("Cluster-IP", "/spec/clusterIP", "The cluster IP"),
                        Column::computed("Port(s)", crate::table::service_ports, "The ports"),
                    ]
                },
            ),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "endpoints",
            kind: "Endpoints",
            namespaced: true,
            short_names: &["ep"],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::Endpoints>(no_validation, &[], no_columns),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "resourcequotas",
            kind: "ResourceQuota",
            namespaced: true,
            short_names: &["quota"],
            categories: &[],
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::ResourceQuota>(validate_quota, &[], || {
                vec![
                    Column::computed("Age", crate::table::age_cell, "Time since creation"),
                    Column::computed(
                        "Request",
                        crate::table::quota_requests,
                        "Used and hard amounts of what is requested",
                    ),
                    Column::computed(
                        "Limit",
                        crate::table::quota_limits,
                        "Used and hard amounts of limits",
                    ),
                ]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "limitranges",
            kind: "LimitRange",
            namespaced: true,
            short_names: &["limits"],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::LimitRange>(validate_limit_range, &[], || {
                vec![Column::text(
                    "Created At",
                    "/metadata/creationTimestamp",
                    "When the LimitRange was created",
                )]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "pods",
            kind: "Pod",
            namespaced: true,
            short_names: &["po"],
            categories: all,
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::Pod>(
                validate_pod,
                &[
                    "spec.nodeName",
                    "status.phase",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "status.podIP",
                    "status.nominatedNodeName",
                ],
                || {
                    vec![
                        Column::computed("Ready", crate::table::pod_ready, "Ready containers"),
                        Column::computed(
                            "Status",
                            crate::table::pod_status,
                            "Why the pod is in its state, or its phase",
                        ),
                        Column::computed(
                            "Restarts",
                            crate::table::pod_restarts,
                            "Container restarts",
                        ),
                        Column::computed("Age", crate::table::age_cell, "Time since creation"),
                        Column::text("IP", "/status/podIP", "The pod's IP").wide(),
                        Column::text("Node", "/spec/nodeName", "The node the pod is bound to")
                            .wide(),
                    ]
                },
            ),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "nodes",
            kind: "Node",
            namespaced: false,
            short_names: &["no"],
            categories: &[],
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::Node>(no_validation, &["spec.unschedulable"], || {
                vec![
                    Column::computed("Status", crate::table::node_status, "Node readiness"),
                    Column::computed("Age", crate::table::age_cell, "Time since creation"),
                    Column::text(
                        "Version",
                        "/status/nodeInfo/kubeletVersion",
                        "Node agent version",
                    ),
                    Column::text(
                        "Internal-IP",
                        "/status/addresses/0/address",
                        "The node's address",
                    )
                    .wide(),
                    Column::text("Pod-CIDR", "/spec/podCIDR", "The node's pod range").wide(),
                ]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "events",
            kind: "Event",
            namespaced: true,
            short_names: &["ev"],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<core::Event>(
                validate_core_event,
                &[
                    "involvedObject.kind",
                    "involvedObject.namespace",
                    "involvedObject.name",
                    "involvedObject.uid",
                    "involvedObject.apiVersion",
                    "involvedObject.resourceVersion",
                    "involvedObject.fieldPath",
                    "reason",
                    "reportingComponent",
                    "source",
                    "type",
                ],
                || {
                    vec![
                        Column::text("Type", "/type", "Event type"),
                        Column::text("Reason", "/reason", "Event reason"),
                        Column::text("Message", "/message", "Event message"),
                    ]
                },
            ),
        },
        Decl {
            review: false,
            group: "events.k8s.io",
            version: "v1",
            resource: "events",
            kind: "Event",
            namespaced: true,
            short_names: &["ev"],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<events::Event>(
                validate_events_event,
                &[
                    "regarding.kind",
                    "regarding.namespace",
                    "regarding.name",
                    "regarding.uid",
                    "reason",
                    "type",
                ],
                no_columns,
            ),
        },
        Decl {
            review: false,
            group: "coordination.k8s.io",
            version: "v1",
            resource: "leases",
            kind: "Lease",
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<coordination::Lease>(no_validation, &[], || {
                vec![Column::text(
                    "Holder",
                    "/spec/holderIdentity",
                    "The lease holder",
                )]
            }),
        },
        Decl {
            review: false,
            group: "discovery.k8s.io",
            version: "v1",
            resource: "endpointslices",
            kind: "EndpointSlice",
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<discovery::EndpointSlice>(validate_endpointslice, &[], || {
                vec![Column::text("AddressType", "/addressType", "Address type")]
            }),
        },
        Decl {
            review: false,
            group: "apps",
            version: "v1",
            resource: "deployments",
            kind: "Deployment",
            namespaced: true,
            short_names: &["deploy"],
            categories: all,
            status: true,
            scale: true,
            name_rule: Subdomain,
            strategy: typed::<apps::Deployment>(validate_workload, &[], || {
                vec![
                    Column::computed("Ready", crate::table::ready_of_replicas, "Ready replicas"),
                    Column::int("Up-to-date", "/status/updatedReplicas", "Updated replicas"),
                    Column::int(
                        "Available",
                        "/status/availableReplicas",
                        "Available replicas",
                    ),
                ]
            }),
        },
        Decl {
            review: false,
            group: "",
            version: "v1",
            resource: "replicationcontrollers",
            kind: "ReplicationController",
            namespaced: true,
            short_names: &["rc"],
            categories: all,
            status: true,
            scale: true,
            name_rule: Subdomain,
            strategy: typed::<core::ReplicationController>(
                validate_replication_controller,
                &[],
                || {
                    vec![
                        Column::int("Desired", "/spec/replicas", "Desired replicas"),
                        Column::int("Current", "/status/replicas", "Current replicas"),
                        Column::int("Ready", "/status/readyReplicas", "Ready replicas"),
                    ]
                },
            ),
        },
        Decl {
            review: false,
            group: "apps",
            version: "v1",
            resource: "replicasets",
            kind: "ReplicaSet",
            namespaced: true,
            short_names: &["rs"],
            categories: all,
            status: true,
            scale: true,
            name_rule: Subdomain,
            strategy: typed::<apps::ReplicaSet>(validate_workload, &[], || {
                vec![
                    Column::int("Desired", "/spec/replicas", "Desired replicas"),
                    Column::int("Current", "/status/replicas", "Current replicas"),
                    Column::int("Ready", "/status/readyReplicas", "Ready replicas"),
                ]
            }),
        },
        Decl {
            review: false,
            group: "apps",
            version: "v1",
            resource: "statefulsets",
            kind: "StatefulSet",
            namespaced: true,
            short_names: &["sts"],
            categories: all,
            status: true,
            scale: true,
            name_rule: Subdomain,
            strategy: typed::<apps::StatefulSet>(validate_statefulset, &[], || {
                vec![Column::computed(
                    "Ready",
                    crate::table::ready_of_replicas,
                    "Ready replicas",
                )]
            }),
        },
        Decl {
            review: false,
            group: "apps",
            version: "v1",
            resource: "daemonsets",
            kind: "DaemonSet",
            namespaced: true,
            short_names: &["ds"],
            categories: all,
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<apps::DaemonSet>(validate_workload, &[], || {
                vec![
                    Column::int(
                        "Desired",
                        "/status/desiredNumberScheduled",
                        "Nodes wanting a pod",
                    ),
                    Column::int(
                        "Current",
                        "/status/currentNumberScheduled",
                        "Nodes with a pod",
                    ),
                    Column::int("Ready", "/status/numberReady", "Ready pods"),
                    Column::int(
                        "Up-to-date",
                        "/status/updatedNumberScheduled",
                        "Updated pods",
                    ),
                    Column::int("Available", "/status/numberAvailable", "Available pods"),
                    Column::computed(
                        "Node Selector",
                        crate::table::template_node_selector,
                        "The pods' nodeSelector",
                    ),
                ]
            }),
        },
        Decl {
            review: false,
            group: "batch",
            version: "v1",
            resource: "jobs",
            kind: "Job",
            namespaced: true,
            short_names: &[],
            categories: all,
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<batch::Job>(validate_job, &["status.successful"], || {
                vec![
                    Column::computed("Status", crate::table::job_status, "The job's state"),
                    Column::computed(
                        "Completions",
                        crate::table::job_completions,
                        "Succeeded pods of those wanted",
                    ),
                    Column::computed("Duration", crate::table::job_duration, "How long it ran"),
                ]
            }),
        },
        Decl {
            review: false,
            group: "batch",
            version: "v1",
            resource: "cronjobs",
            kind: "CronJob",
            namespaced: true,
            short_names: &["cj"],
            categories: all,
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<batch::CronJob>(validate_cronjob, &[], || {
                vec![
                    Column::text("Schedule", "/spec/schedule", "When its Jobs start"),
                    Column::computed(
                        "Timezone",
                        crate::table::cronjob_time_zone,
                        "The schedule's time zone",
                    ),
                    Column::computed("Suspend", crate::table::cronjob_suspend, "Suspended"),
                    Column::computed("Active", crate::table::cronjob_active, "Running Jobs"),
                    Column::computed(
                        "Last Schedule",
                        crate::table::cronjob_last_schedule,
                        "When a Job last started",
                    ),
                ]
            }),
        },
        Decl {
            review: false,
            group: "apiextensions.k8s.io",
            version: "v1",
            resource: "customresourcedefinitions",
            kind: "CustomResourceDefinition",
            namespaced: false,
            short_names: &["crd", "crds"],
            categories: &["api-extensions"],
            status: true,
            scale: false,
            name_rule: Subdomain,
            strategy: typed::<apiextensions::CustomResourceDefinition>(
                crate::crd::validate_crd,
                &[],
                || {
                    vec![Column::text(
                        "Created At",
                        "/metadata/creationTimestamp",
                        "When the CRD was created",
                    )]
                },
            ),
        },
        Decl {
            review: false,
            group: "rbac.authorization.k8s.io",
            version: "v1",
            resource: "clusterroles",
            kind: "ClusterRole",
            namespaced: false,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: NameRule::PathSegment,
            strategy: typed::<rbac::ClusterRole>(no_validation, &[], || {
                vec![Column::text(
                    "Created At",
                    "/metadata/creationTimestamp",
                    "When it was created",
                )]
            }),
        },
        Decl {
            review: false,
            group: "rbac.authorization.k8s.io",
            version: "v1",
            resource: "roles",
            kind: "Role",
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: NameRule::PathSegment,
            strategy: typed::<rbac::Role>(no_validation, &[], || {
                vec![Column::text(
                    "Created At",
                    "/metadata/creationTimestamp",
                    "When it was created",
                )]
            }),
        },
        Decl {
            review: false,
            group: "rbac.authorization.k8s.io",
            version: "v1",
            resource: "clusterrolebindings",
            kind: "ClusterRoleBinding",
            namespaced: false,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: NameRule::PathSegment,
            strategy: typed::<rbac::ClusterRoleBinding>(validate_binding, &[], || {
                vec![Column::computed("Role", role_ref_column, "The bound role")]
            }),
        },
        Decl {
            review: false,
            group: "rbac.authorization.k8s.io",
            version: "v1",
            resource: "rolebindings",
            kind: "RoleBinding",
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            name_rule: NameRule::PathSegment,
            strategy: typed::<rbac::RoleBinding>(validate_binding, &[], || {
                vec![Column::computed("Role", role_ref_column, "The bound role")]
            }),
        },
        Decl::review(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        Decl::review(
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
        Decl::review(
            "authorization.k8s.io",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
        Decl::review(
            "authorization.k8s.io",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        Decl::review(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
        Decl::review(
            "authentication.k8s.io",
            "tokenreviews",
            "TokenReview",
            false,
        ),
        Decl {
            review: false,
            group: "certificates.k8s.io",
            version: "v1",
            resource: "certificatesigningrequests",
            kind: "CertificateSigningRequest",
            namespaced: false,
            short_names: &["csr"],
            categories: &[],
            status: true,
            scale: false,
            name_rule: NameRule::Subdomain,
            strategy: typed::<certificates::CertificateSigningRequest>(
                crate::csr::validate,
                &[],
                || {
                    vec![
                        Column::text("SignerName", "/spec/signerName", "The signer"),
                        Column::text("Requestor", "/spec/username", "Who asked"),
                        Column::computed("Condition", crate::csr::condition_column, "Approval"),
                    ]
                },
            ),
        },
        Decl {
            review: false,
            group: "admissionregistration.k8s.io",
            version: "v1",
            resource: "validatingwebhookconfigurations",
            kind: "ValidatingWebhookConfiguration",
            namespaced: false,
            short_names: &[],
            categories: &["api-extensions"],
            status: false,
            scale: false,
            name_rule: NameRule::Subdomain,
            strategy: typed::<admission::ValidatingWebhookConfiguration>(
                no_validation,
                &[],
                no_columns,
            ),
        },
        Decl {
            review: false,
            group: "admissionregistration.k8s.io",
            version: "v1",
            resource: "mutatingwebhookconfigurations",
            kind: "MutatingWebhookConfiguration",
            namespaced: false,
            short_names: &[],
            categories: &["api-extensions"],
            status: false,
            scale: false,
            name_rule: NameRule::Subdomain,
            strategy: typed::<admission::MutatingWebhookConfiguration>(
                no_validation,
                &[],
                no_columns,
            ),
        },
    ];
    decls
        .into_iter()
        .map(|d| {
            Arc::new(ResourceType {
                group: d.group.into(),
                version: d.version.into(),
                storage_version: d.version.into(),
                resource: d.resource.into(),
                singular: d.kind.to_lowercase(),
                kind: d.kind.into(),
                namespaced: d.namespaced,
                short_names: d.short_names.iter().map(|s| s.to_string()).collect(),
                categories: d.categories.iter().map(|s| s.to_string()).collect(),
                status_subresource: d.status,
                scale: d.scale.then(|| ScalePaths {
                    spec_replicas: "/spec/replicas".into(),
                    status_replicas: "/status/replicas".into(),
                    label_selector: Some("/spec/selector".into()),
                }),
                name_rule: d.name_rule,
                strategy: d.strategy,
                schema: None,
                crd: None,
                review: d.review,
            })
        })
        .collect()
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn validate_data_keys(obj: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(map) = obj.get(field).and_then(Value::as_object) {
        for key in map.keys() {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key != "."
                && key != ".."
                && key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
            if !ok {
                causes.push(Cause::invalid(
                    format!("{field}[{key}]"),
                    key,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

fn immutable_data(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if let Some(old) = old
        && old.get("immutable").and_then(Value::as_bool) == Some(true)
    {
        for f in ["data", "binaryData", "stringData"] {
            if obj.get(f) != old.get(f) {
                causes.push(Cause::forbidden(
                    f,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        if obj.get("immutable") != old.get("immutable") {
            causes.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn validate_configmap(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    validate_data_keys(obj, "data", causes);
    validate_data_keys(obj, "binaryData", causes);
    immutable_data(obj, old, causes);
    let size: usize = ["data", "binaryData"]
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .flat_map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        })
        .sum();
    if size > 1024 * 1024 {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: "data".into(),
            message: "Too long: must have at most 1048576 bytes".into(),
        });
    }
}

fn validate_secret(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    validate_data_keys(obj, "data", causes);
    immutable_data(obj, old, causes);
    if let Some(old) = old
        && obj.get("type") != old.get("type")
    {
        causes.push(Cause::invalid(
            "type",
            str_at(obj, "/type"),
            "field is immutable",
        ));
    }
}

fn validate_service(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let supported = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !supported.contains(&ty) {
        causes.push(Cause::not_supported("spec.type", ty, &supported));
    }
    if ty == "ExternalName" && str_at(obj, "/spec/externalName").is_empty() {
        causes.push(Cause::required("spec.externalName"));
    }
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    if ty != "ExternalName"
        && ports.is_none_or(|p| p.is_empty())
        && str_at(obj, "/spec/clusterIP") != "None"
    {
        causes.push(Cause::required("spec.ports"));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(Cause::not_supported(
                format!("spec.ports[{i}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if ports.is_some_and(|all| all.len() > 1)
            && p.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
    }
    if let Some(old) = old {
        let was = str_at(old, "/spec/clusterIP");
        let now = str_at(obj, "/spec/clusterIP");
        if !was.is_empty() && now != was {
            causes.push(Cause::invalid("spec.clusterIP", now, "field is immutable"));
        }
    }
}

fn validate_pod(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required("spec.containers")),
        Some(cs) if cs.is_empty() => causes.push(Cause::required("spec.containers")),
        Some(cs) => {
            let mut names = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(format!("spec.containers[{i}].name")));
                } else if let Err(m) = crate::validation::dns1123_label(name) {
                    causes.push(Cause::invalid(
                        format!("spec.containers[{i}].name"),
                        name,
                        &m,
                    ));
                } else if !names.insert(name) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: format!("spec.containers[{i}].name"),
                        message: format!("Duplicate value: \"{name}\""),
                    });
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("spec.containers[{i}].image")));
                }
            }
        }
    }
    let policy = obj
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.restartPolicy",
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(old) = old {
        // A pod's spec is immutable but for a few fields; the binding may be set once.
        let mut a = old.get("spec").cloned().unwrap_or_default();
        let mut b = obj.get("spec").cloned().unwrap_or_default();
        for s in [&mut a, &mut b] {
            if let Some(m) = s.as_object_mut() {
                for f in [
                    "activeDeadlineSeconds",
                    "tolerations",
                    "terminationGracePeriodSeconds",
                    "schedulingGates",
                ] {
                    m.remove(f);
                }
                if let Some(cs) = m.get_mut("containers").and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
        }
        let was_bound = !str_at(&a, "/nodeName").is_empty();
        if !was_bound && let Some(m) = b.as_object_mut() {
            m.remove("nodeName");
        }
        if !was_bound && let Some(m) = a.as_object_mut() {
            m.remove("nodeName");
        }
        if a != b {
            causes.push(Cause::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds`"));
        }
    }
}

fn validate_core_event(obj: &Value, _: Option<&Value>, causes: &mut Vec<Cause>) {
    if obj.get("involvedObject").is_none() {
        causes.push(Cause::required("involvedObject"));
    }
}

fn validate_events_event(obj: &Value, _: Option<&Value>, causes: &mut Vec<Cause>) {
    if str_at(obj, "/eventTime").is_empty() {
        causes.push(Cause::required("eventTime"));
    }
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if str_at(obj, &format!("/{f}")).is_empty() {
            causes.push(Cause::required(f));
        }
    }
}

fn validate_endpointslice(obj: &Value, _: Option<&Value>, causes: &mut Vec<Cause>) {
    let t = str_at(obj, "/addressType");
    if !["IPv4", "IPv6", "FQDN"].contains(&t) {
        causes.push(Cause::not_supported(
            "addressType",
            t,
            &["FQDN", "IPv4", "IPv6"],
        ));
    }
}

/// A ReplicationController: its selector is a plain label map (defaulted from the template's
/// labels), which the template's labels must carry; replicas not negative.
fn validate_replication_controller(obj: &Value, _old: Option<&Value>, causes: &mut Vec<Cause>) {
    let selector: Option<std::collections::BTreeMap<String, String>> = obj
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let labels: std::collections::BTreeMap<String, String> = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    match selector {
        None if obj.pointer("/spec/selector").is_some_and(|s| !s.is_null()) => causes.push(
            Cause::invalid("spec.selector", "", "must be a map of label keys to values"),
        ),
        Some(sel) if sel.is_empty() => causes.push(Cause::required("spec.selector")),
        None => causes.push(Cause::required("spec.selector")),
        Some(sel) => {
            if obj.pointer("/spec/template").is_some_and(|t| !t.is_null())
                && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &serde_json::to_string(&labels).unwrap_or_default(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            &r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

fn validate_workload(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let selector = obj.pointer("/spec/selector");
    if selector.is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty())) {
        causes.push(Cause::required("spec.selector"));
    } else if let Some(sel) = selector {
        match crate::selector::LabelSelector::from_json(sel) {
            Ok(sel) => {
                let labels: std::collections::BTreeMap<String, String> = obj
                    .pointer("/spec/template/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                if !sel.matches(&labels) {
                    causes.push(Cause::invalid(
                        "spec.template.metadata.labels",
                        &serde_json::to_string(&labels).unwrap_or_default(),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => causes.push(Cause::invalid("spec.selector", "", &e.to_string())),
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            &r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(old) = old
        && old.pointer("/spec/selector") != selector
    {
        causes.push(Cause::invalid("spec.selector", "", "field is immutable"));
    }
    let pod = serde_json::json!({"spec": obj.pointer("/spec/template/spec").cloned().unwrap_or_default()});
    if pod["spec"].is_null() {
        causes.push(Cause::required("spec.template.spec"));
        return;
    }
    let mut pod_causes = Vec::new();
    validate_pod(&pod, None, &mut pod_causes);
    for mut c in pod_causes {
        c.field = format!("spec.template.{}", c.field);
        causes.push(c);
    }
}

/// A Job: a workload whose pods run to completion (the selector and labels are defaulted
/// from its uid before this runs, as kube-apiserver does).
fn validate_job(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    validate_workload(obj, old, causes);
    let policy = str_at(obj, "/spec/template/spec/restartPolicy");
    if policy.is_empty() {
        causes.push(Cause {
            message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
            ..Cause::required("spec.template.spec.restartPolicy")
        });
    } else if !["OnFailure", "Never"].contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            policy,
            &["OnFailure", "Never"],
        ));
    }
    for field in ["parallelism", "completions", "backoffLimit"] {
        if let Some(n) = obj
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            && n < 0
        {
            causes.push(Cause::invalid(
                format!("spec.{field}"),
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    for field in ["activeDeadlineSeconds", "ttlSecondsAfterFinished"] {
        let min = if field == "activeDeadlineSeconds" {
            1
        } else {
            0
        };
        if let Some(n) = obj
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            && n < min
        {
            causes.push(Cause::invalid(
                format!("spec.{field}"),
                &n.to_string(),
                &format!("must be greater than or equal to {min}"),
            ));
        }
    }
    let mode = str_at(obj, "/spec/completionMode");
    if !mode.is_empty() && mode != "NonIndexed" {
        causes.push(Cause::not_supported(
            "spec.completionMode",
            mode,
            &["NonIndexed"],
        ));
    }
    if let Some(old) = old
        && old.pointer("/spec/template") != obj.pointer("/spec/template")
    {
        causes.push(Cause::invalid("spec.template", "", "field is immutable"));
    }
}

/// A claim: access modes and a size; once bound, what it asked for stays (but for a larger
/// size).
fn validate_quota(obj: &Value, _: Option<&Value>, causes: &mut Vec<Cause>) {
    crate::quota::validate(obj, causes);
}

fn validate_limit_range(obj: &Value, _: Option<&Value>, causes: &mut Vec<Cause>) {
    crate::limitrange::validate(obj, causes);
}

fn validate_namespace(obj: &Value, _: Option<&Value>, causes: &mut Vec<Cause>) {
    crate::podsecurity::validate_namespace(obj, causes);
}

fn validate_pvc(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let modes = obj
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if modes.is_empty() {
        causes.push(Cause::required("spec.accessModes"));
    }
    let allowed = [
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ];
    for (i, m) in modes.iter().enumerate() {
        let m = m.as_str().unwrap_or_default();
        if !allowed.contains(&m) {
            causes.push(Cause::not_supported(
                format!("spec.accessModes[{i}]"),
                m,
                &allowed,
            ));
        }
    }
    let size = str_at(obj, "/spec/resources/requests/storage");
    if size.is_empty() {
        causes.push(Cause::required("spec.resources[storage]"));
    } else if atoll_runtime::quantity::units(size).is_none() {
        causes.push(Cause::invalid(
            "spec.resources.requests[storage]",
            size,
            "must be a quantity, like 1Gi",
        ));
    }
    if let Some(old) = old {
        for f in ["accessModes", "storageClassName", "selector", "volumeMode"] {
            let was = old.pointer(&format!("/spec/{f}"));
            if was.is_some() && was != obj.pointer(&format!("/spec/{f}")) {
                causes.push(Cause::forbidden(
                    format!("spec.{f}"),
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        let was = str_at(old, "/spec/volumeName");
        if !was.is_empty() && was != str_at(obj, "/spec/volumeName") {
            causes.push(Cause::forbidden(
                "spec.volumeName",
                "a bound claim's volume does not change",
            ));
        }
    }
}

/// A StatefulSet: a workload whose pods have stable names and claims.
fn validate_statefulset(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    validate_workload(obj, old, causes);
    let policy = str_at(obj, "/spec/podManagementPolicy");
    if !policy.is_empty() && !["OrderedReady", "Parallel"].contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.podManagementPolicy",
            policy,
            &["OrderedReady", "Parallel"],
        ));
    }
    let strategy = str_at(obj, "/spec/updateStrategy/type");
    if !strategy.is_empty() && !["RollingUpdate", "OnDelete"].contains(&strategy) {
        causes.push(Cause::not_supported(
            "spec.updateStrategy.type",
            strategy,
            &["RollingUpdate", "OnDelete"],
        ));
    }
    if let Some(old) = old {
        // As kube-apiserver: only replicas, template, update strategy, ordinals, minReadySeconds
        // and the claim retention policy may change.
        for f in [
            "selector",
            "serviceName",
            "podManagementPolicy",
            "volumeClaimTemplates",
        ] {
            if old.pointer(&format!("/spec/{f}")) != obj.pointer(&format!("/spec/{f}")) {
                causes.push(Cause::forbidden(
                    format!("spec.{f}"),
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
    }
}

/// A CronJob: a schedule cron reads, a time zone the machine knows, and a Job template.
fn validate_cronjob(obj: &Value, _old: Option<&Value>, causes: &mut Vec<Cause>) {
    // Its Jobs are named NAME-<minutes since the epoch>, and that name is a label value.
    let name = str_at(obj, "/metadata/name");
    if name.len() > 52 {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let schedule = str_at(obj, "/spec/schedule");
    if schedule.is_empty() {
        causes.push(Cause::required("spec.schedule"));
    } else if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
        causes.push(Cause::invalid(
            "spec.schedule",
            schedule,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    } else if let Err(e) = atoll_runtime::cron::Schedule::parse(schedule) {
        causes.push(Cause::invalid("spec.schedule", schedule, &e));
    }
    let zone = str_at(obj, "/spec/timeZone");
    if !zone.is_empty() && jiff::tz::TimeZone::get(zone).is_err() {
        causes.push(Cause::invalid(
            "spec.timeZone",
            zone,
            "unknown time zone (this machine's time zone database does not have it)",
        ));
    }
    let policy = str_at(obj, "/spec/concurrencyPolicy");
    if !policy.is_empty() && !["Allow", "Forbid", "Replace"].contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    let restart = str_at(obj, "/spec/jobTemplate/spec/template/spec/restartPolicy");
    let field = "spec.jobTemplate.spec.template.spec.restartPolicy";
    if restart.is_empty() {
        causes.push(Cause {
            message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
            ..Cause::required(field)
        });
    } else if !["OnFailure", "Never"].contains(&restart) {
        causes.push(Cause::not_supported(
            field,
            restart,
            &["OnFailure", "Never"],
        ));
    }
    if obj
        .pointer("/spec/jobTemplate/spec/template/spec")
        .is_none()
    {
        causes.push(Cause::required("spec.jobTemplate.spec.template.spec"));
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if let Some(n) = obj.pointer(&format!("/spec/{f}")).and_then(Value::as_i64)
            && n < 0
        {
            causes.push(Cause::invalid(
                format!("spec.{f}"),
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn validate_binding(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let kind = str_at(obj, "/roleRef/kind");
    if !["Role", "ClusterRole"].contains(&kind) {
        causes.push(Cause::not_supported(
            "roleRef.kind",
            kind,
            &["ClusterRole", "Role"],
        ));
    }
    if str_at(obj, "/roleRef/name").is_empty() {
        causes.push(Cause::required("roleRef.name"));
    }
    if let Some(old) = old
        && old.get("roleRef") != obj.get("roleRef")
    {
        causes.push(Cause::invalid("roleRef", "", "cannot change roleRef"));
    }
    for (i, s) in obj
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let k = s.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !["User", "Group", "ServiceAccount"].contains(&k) {
            causes.push(Cause::not_supported(
                format!("subjects[{i}].kind"),
                k,
                &["Group", "ServiceAccount", "User"],
            ));
        }
        if s.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("subjects[{i}].name")));
        }
    }
}

fn role_ref_column(obj: &Value) -> Value {
    Value::String(format!(
        "{}/{}",
        str_at(obj, "/roleRef/kind"),
        str_at(obj, "/roleRef/name")
    ))
}

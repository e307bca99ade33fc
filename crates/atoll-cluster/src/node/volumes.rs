//! A pod's volumes on this node: ConfigMap, Secret, downward API and projected volumes written
//! as files under the pod directory (`volumes/<name>`), emptyDir as a directory there,
//! hostPath and claims as directories of the node's; the service-account token projected as
//! the kubelet projects it; and the pod's own `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname`, for the sandbox to mount.
//!
//! Without a sandbox a container cannot see a mount path of its own, so each mount path is
//! also linked under the pod directory: a volume at `/etc/config` is at `$POD_DIR/etc/config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::{NodeCtx, env, sandbox};

/// The name of the volume the service-account token is projected in (as the kubelet's
/// admission-made `kube-api-access-*`).
const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access";

/// What the containers' sandboxes are made of.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prepared {
    /// Each volume's directory (or file) on this node, by volume name.
    pub volumes: BTreeMap<String, PathBuf>,
    /// The service-account projection's directory, when the pod has one.
    pub service_account: Option<PathBuf>,
    /// The pod's hosts, resolv.conf and hostname files.
    pub etc: PathBuf,
    /// Tokens to renew while the pod runs.
    pub tokens: Vec<TokenFile>,
}

/// A projected service-account token: where it is written and what was asked for.
#[derive(Clone, Debug)]
pub(crate) struct TokenFile {
    pub path: PathBuf,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    /// When it is to be renewed (80% of its life, as the kubelet).
    pub renew_at: std::time::Instant,
}

/// Write the pod's volumes and files; a missing ConfigMap, Secret, claim or service account
/// is an error the pod waits on, as in Kubernetes.
pub(crate) async fn prepare(
    ctx: &NodeCtx,
    pod: &Pod,
    dir: &Path,
    pod_ip: &str,
) -> Result<Prepared, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let io = |e: std::io::Error| format!("cannot prepare the pod directory {}: {e}", dir.display());
    std::fs::create_dir_all(dir.join("volumes")).map_err(io)?;
    let mut prepared = Prepared {
        etc: write_etc(ctx, pod, dir, pod_ip).await?,
        ..Default::default()
    };
    let Some(spec) = &pod.spec else {
        return Ok(prepared);
    };
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    for v in spec.volumes.iter().flatten() {
        let target = dir.join("volumes").join(&v.name);
        // File modes: an item's own, else the volume's `defaultMode`, else 0644.
        let mut modes: BTreeMap<String, i32> = BTreeMap::new();
        let mut default_mode = None;
        let files: Option<BTreeMap<String, Vec<u8>>> = if let Some(cm) = &v.config_map {
            item_modes(&mut modes, cm.items.as_deref());
            default_mode = cm.default_mode;
            Some(
                config_map(ctx, &namespace, &cm.name, cm.optional, cm.items.as_deref())
                    .await
                    .map_err(|e| {
                        format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name)
                    })?,
            )
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            item_modes(&mut modes, s.items.as_deref());
            default_mode = s.default_mode;
            Some(
                secret(ctx, &namespace, &name, s.optional, s.items.as_deref())
                    .await
                    .map_err(|e| {
                        format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name)
                    })?,
            )
        } else if let Some(d) = &v.downward_api {
            default_mode = d.default_mode;
            for i in d.items.iter().flatten() {
                if let Some(m) = i.mode {
                    modes.insert(i.path.clone(), m);
                }
            }
            Some(downward(
                ctx,
                pod,
                pod_ip,
                &containers,
                d.items.as_deref().unwrap_or_default(),
            ))
        } else if let Some(p) = &v.projected {
            let mut files = BTreeMap::new();
            default_mode = p.default_mode;
            for source in p.sources.iter().flatten() {
                item_modes(
                    &mut modes,
                    source.config_map.as_ref().and_then(|c| c.items.as_deref()),
                );
                item_modes(
                    &mut modes,
                    source.secret.as_ref().and_then(|c| c.items.as_deref()),
                );
                for i in source
                    .downward_api
                    .iter()
                    .flat_map(|d| d.items.iter().flatten())
                {
                    if let Some(m) = i.mode {
                        modes.insert(i.path.clone(), m);
                    }
                }
                let more = if let Some(cm) = &source.config_map {
                    config_map(ctx, &namespace, &cm.name, cm.optional, cm.items.as_deref()).await
                } else if let Some(s) = &source.secret {
                    secret(ctx, &namespace, &s.name, s.optional, s.items.as_deref()).await
                } else if let Some(d) = &source.downward_api {
                    Ok(downward(
                        ctx,
                        pod,
                        pod_ip,
                        &containers,
                        d.items.as_deref().unwrap_or_default(),
                    ))
                } else if let Some(t) = &source.service_account_token {
                    let token = TokenFile {
                        path: target.join(&t.path),
                        audience: t.audience.clone().filter(|a| !a.is_empty()),
                        expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                        renew_at: std::time::Instant::now(),
                    };
                    let (bytes, token) = request_token(ctx, pod, token).await.map_err(|e| {
                        format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name)
                    })?;
                    prepared.tokens.push(token);
                    Ok(BTreeMap::from([(t.path.clone(), bytes)]))
                } else {
                    Err("the process runtime projects configMap, secret, downwardAPI and serviceAccountToken sources".to_string())
                };
                files.extend(more.map_err(|e| {
                    format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name)
                })?);
            }
            Some(files)
        } else if v.empty_dir.is_some() {
            None
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            // The types that say to make what is missing; the others want it there.
            match h.type_.as_deref() {
                Some("DirectoryOrCreate") => std::fs::create_dir_all(&path).map_err(io)?,
                Some("FileOrCreate") if !path.exists() => std::fs::write(&path, b"").map_err(io)?,
                _ => {}
            }
            prepared.volumes.insert(v.name.clone(), path);
            continue;
        } else if let Some(claim) = &v.persistent_volume_claim {
            let path = claim_dir(ctx, &namespace, dir, &v.name, &claim.claim_name).await?;
            prepared.volumes.insert(v.name.clone(), path);
            continue;
        } else {
            return Err(format!(
                "volume {:?}: the process runtime supports emptyDir, configMap, secret, downwardAPI, projected, hostPath and persistentVolumeClaim volumes",
                v.name
            ));
        };
        std::fs::create_dir_all(&target).map_err(io)?;
        let files = files.unwrap_or_default();
        let paths: Vec<String> = files.keys().cloned().collect();
        write_files(&target, files).map_err(|e| format!("volume {:?}: {e}", v.name))?;
        for path in paths {
            let mode = modes.get(&path).copied().or(default_mode).unwrap_or(0o644);
            set_mode(&target.join(&path), mode).map_err(|e| format!("volume {:?}: {e}", v.name))?;
        }
        prepared.volumes.insert(v.name.clone(), target);
    }
    if let Some((dir, token)) = service_account(ctx, pod, dir).await? {
        prepared.service_account = Some(dir);
        prepared.tokens.push(token);
    }
    link_mount_paths(pod, dir, &prepared, ctx.sandbox.is_some())?;
    Ok(prepared)
}

/// The pod's `/etc` files, written under `sandbox/etc`.
async fn write_etc(ctx: &NodeCtx, pod: &Pod, dir: &Path, pod_ip: &str) -> Result<PathBuf, String> {
    let etc = dir.join("sandbox").join("etc");
    let io = |e: std::io::Error| format!("cannot write {}: {e}", etc.display());
    std::fs::create_dir_all(&etc).map_err(io)?;
    let zone = &ctx.cfg.cluster_domain;
    let dns = match &ctx.cfg.cluster_dns {
        Some(ip) => Some(ip.clone()),
        None => cluster_dns(ctx).await,
    };
    let node =
        sandbox::Resolver::parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let resolv = sandbox::resolv_conf(pod, dns.as_deref(), zone, &node)?;
    std::fs::write(etc.join("resolv.conf"), resolv).map_err(io)?;
    std::fs::write(etc.join("hosts"), sandbox::hosts_file(pod, pod_ip, zone)).map_err(io)?;
    std::fs::write(
        etc.join("hostname"),
        format!("{}\n", sandbox::hostname(pod)),
    )
    .map_err(io)?;
    Ok(etc)
}

/// The ClusterIP of Service `kube-system/kube-dns`, if there is one.
async fn cluster_dns(ctx: &NodeCtx) -> Option<String> {
    let api: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(ctx.client.clone(), "kube-system");
    let svc = api.get_opt("kube-dns").await.ok().flatten()?;
    svc.spec?
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
}

async fn config_map(
    ctx: &NodeCtx,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
    items: Option<&[KeyToPath]>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(c) => {
            let mut data: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(select_items(data, items))
        }
        None if optional.unwrap_or(false) => Ok(BTreeMap::new()),
        None => Err(format!("configmap {name:?} not found")),
    }
}

async fn secret(
    ctx: &NodeCtx,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
    items: Option<&[KeyToPath]>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(sec) => {
            let mut data: BTreeMap<String, Vec<u8>> = sec
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            data.extend(
                sec.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            Ok(select_items(data, items))
        }
        None if optional.unwrap_or(false) => Ok(BTreeMap::new()),
        None => Err(format!("secret {name:?} not found")),
    }
}

/// Downward API files: pod fields and containers' resources.
fn downward(
    ctx: &NodeCtx,
    pod: &Pod,
    pod_ip: &str,
    containers: &[&Container],
    items: &[DownwardAPIVolumeFile],
) -> BTreeMap<String, Vec<u8>> {
    items
        .iter()
        .filter_map(|i| {
            let value = if let Some(f) = &i.field_ref {
                env::field(pod, &f.field_path, pod_ip, &ctx.host_ip)?
            } else if let Some(r) = &i.resource_field_ref {
                let c = containers
                    .iter()
                    .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                    .or(containers.first())?;
                env::resource_field(c, &r.resource)
            } else {
                return None;
            };
            Some((i.path.clone(), value.into_bytes()))
        })
        .collect()
}

/// A claim's directory (`node-directory.atoll.io`): a directory of the node's, kept across the
/// pod's restarts and replacements on this node. As the kubelet, the claim must exist and be
/// bound before the pod starts.
async fn claim_dir(
    ctx: &NodeCtx,
    namespace: &str,
    dir: &Path,
    volume: &str,
    name: &str,
) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("volume {volume:?}: invalid claim name {name:?}"));
    }
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), namespace);
    match claims.get_opt(name).await {
        Ok(Some(c)) if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") => {}
        Ok(Some(_)) => {
            return Err(format!(
                "volume {volume:?}: persistentvolumeclaim {name:?} is not bound yet"
            ));
        }
        Ok(None) => {
            return Err(format!(
                "volume {volume:?}: persistentvolumeclaim {name:?} not found"
            ));
        }
        Err(e) => {
            return Err(format!(
                "volume {volume:?}: cannot read persistentvolumeclaim {name:?}: {e}"
            ));
        }
    }
    let path = dir
        .parent()
        .and_then(Path::parent)
        .map(|node| node.join("claims").join(namespace).join(name))
        .ok_or_else(|| format!("volume {volume:?}: no node directory for claims"))?;
    std::fs::create_dir_all(&path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
    Ok(path)
}

/// The service-account projection (`token`, `ca.crt`, `namespace`), unless the pod or its
/// service account says `automountServiceAccountToken: false`.
async fn service_account(
    ctx: &NodeCtx,
    pod: &Pod,
    dir: &Path,
) -> Result<Option<(PathBuf, TokenFile)>, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.automount_service_account_token == Some(false) {
        return Ok(None);
    }
    let namespace = pod.namespace().unwrap_or_default();
    let account = service_account_name(pod);
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let sa = api
        .get_opt(&account)
        .await
        .map_err(|e| format!("cannot read serviceaccount {account:?}: {e}"))?
        .ok_or_else(|| {
            format!("MountVolume.SetUp failed for volume \"{SERVICE_ACCOUNT_VOLUME}\": serviceaccount {account:?} not found")
        })?;
    if spec.automount_service_account_token.is_none()
        && sa.automount_service_account_token == Some(false)
    {
        return Ok(None);
    }
    let target = dir.join("volumes").join(SERVICE_ACCOUNT_VOLUME);
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("cannot make {}: {e}", target.display()))?;
    let token = TokenFile {
        path: target.join("token"),
        audience: None,
        // The kubelet's own ask: an hour and a bit.
        expiration_seconds: 3607,
        renew_at: std::time::Instant::now(),
    };
    let (bytes, token) = request_token(ctx, pod, token).await.map_err(|e| {
        format!("MountVolume.SetUp failed for volume \"{SERVICE_ACCOUNT_VOLUME}\": {e}")
    })?;
    let mut files = BTreeMap::from([
        ("token".to_string(), bytes),
        ("namespace".to_string(), namespace.into_bytes()),
    ]);
    if !ctx.cfg.cluster_ca.is_empty() {
        files.insert(
            "ca.crt".into(),
            pem_certificates(&ctx.cfg.cluster_ca).into_bytes(),
        );
    }
    write_files(&target, files).map_err(|e| format!("volume {SERVICE_ACCOUNT_VOLUME:?}: {e}"))?;
    Ok(Some((target, token)))
}

fn service_account_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// A token for the pod's service account, bound to the pod, and when to renew it.
async fn request_token(
    ctx: &NodeCtx,
    pod: &Pod,
    mut file: TokenFile,
) -> Result<(Vec<u8>, TokenFile), String> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = service_account_name(pod);
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: file.audience.clone().into_iter().collect(),
            expiration_seconds: Some(file.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        },
        ..Default::default()
    };
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("cannot get a token for serviceaccount {account:?}: {e}"))?;
    let status = answer
        .status
        .ok_or_else(|| "the TokenRequest came back without a token".to_string())?;
    let life = (status.expiration_timestamp.0 - k8s_openapi::jiff::Timestamp::now()).get_seconds();
    file.renew_at = std::time::Instant::now() + renew_after(life);
    Ok((status.token.into_bytes(), file))
}

/// How long after its issue a token with `life` seconds left is renewed: at 80% of its life,
/// as the kubelet, at least daily, and not sooner than in a second.
fn renew_after(life_secs: i64) -> Duration {
    let life = u64::try_from(life_secs).unwrap_or(0);
    Duration::from_secs((life * 4 / 5).clamp(1, 86_400))
}

/// Renew the pod's tokens as they near their end, until aborted with the pod. A renewal that
/// fails is tried again in ten seconds; the old token stays until then.
pub(crate) async fn renew_tokens(
    ctx: std::sync::Arc<NodeCtx>,
    pod: Pod,
    mut tokens: Vec<TokenFile>,
) {
    loop {
        let Some(next) = tokens.iter().map(|t| t.renew_at).min() else {
            return;
        };
        tokio::time::sleep_until(next.into()).await;
        for t in tokens.iter_mut() {
            if t.renew_at > std::time::Instant::now() {
                continue;
            }
            match request_token(&ctx, &pod, t.clone()).await {
                Ok((bytes, renewed)) => {
                    if let Err(e) = write_atomically(&renewed.path, &bytes) {
                        tracing::warn!(pod = %pod.name_any(), error = %e, "cannot write a renewed token");
                    }
                    *t = renewed;
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "cannot renew a token");
                    t.renew_at = std::time::Instant::now() + Duration::from_secs(10);
                }
            }
        }
    }
}

/// Certificates (DER) as PEM.
fn pem_certificates(ders: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Write files under `dir`, each by rename (a reader never sees half a file). Paths must stay
/// inside `dir`.
fn write_files(
    dir: &Path,
    files: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<(), String> {
    for (path, bytes) in files {
        if path.starts_with('/') || path.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(format!("invalid item path {path:?}"));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        }
        write_atomically(&file, &bytes)?;
    }
    Ok(())
}

/// Items' own modes, by path.
fn item_modes(modes: &mut BTreeMap<String, i32>, items: Option<&[KeyToPath]>) {
    for i in items.into_iter().flatten() {
        if let Some(m) = i.mode {
            modes.insert(i.path.clone(), m);
        }
    }
}

/// A file's permission bits (the low 12 of a Kubernetes `mode`).
fn set_mode(file: &Path, mode: i32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let bits = u32::try_from(mode).unwrap_or(0o644) & 0o7777;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(bits))
        .map_err(|e| format!("cannot set the mode of {}: {e}", file.display()))
}

fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = file.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// The source of a container's mount on this node: its volume, or the `subPath` in it (made
/// if missing, as the kubelet does).
pub(crate) fn mount_source(
    prepared: &Prepared,
    container: &str,
    volume: &str,
    sub_path: Option<&str>,
) -> Result<PathBuf, String> {
    let source = prepared.volumes.get(volume).ok_or_else(|| {
        format!("container {container:?} mounts volume {volume:?}, which the pod does not define")
    })?;
    match sub_path.filter(|s| !s.is_empty()) {
        None => Ok(source.clone()),
        Some(sub) => {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(format!(
                    "container {container:?}: subPath {sub:?} must be a relative path inside the volume"
                ));
            }
            let path = source.join(sub);
            if !path.exists() {
                std::fs::create_dir_all(&path)
                    .map_err(|e| format!("cannot make subPath {}: {e}", path.display()))?;
            }
            Ok(path)
        }
    }
}

/// Link each mount path under the pod directory (`$POD_DIR/<mountPath>`): to its source,
/// what a container without a sandbox sees; in a sandbox, to the mount path itself, which is
/// the volume there (a source of the host's may be hidden, as under a private /tmp).
fn link_mount_paths(
    pod: &Pod,
    dir: &Path,
    prepared: &Prepared,
    sandboxed: bool,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot prepare the pod directory {}: {e}", dir.display());
    let Some(spec) = &pod.spec else { return Ok(()) };
    let mut links: Vec<(String, PathBuf)> = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for m in c.volume_mounts.iter().flatten() {
            let source = mount_source(prepared, &c.name, &m.name, m.sub_path.as_deref())?;
            links.push((m.mount_path.clone(), source));
        }
    }
    if let Some(sa) = &prepared.service_account {
        links.push((sandbox::SERVICE_ACCOUNT_DIR.to_string(), sa.clone()));
    }
    for (mount_path, source) in links {
        let relative = mount_path.trim_start_matches('/');
        if relative.is_empty() || relative.split('/').any(|p| p == "..") {
            continue;
        }
        let link = dir.join(relative);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let _ = std::fs::remove_file(&link);
        let target = if sandboxed {
            PathBuf::from(&mount_path)
        } else {
            source
        };
        std::os::unix::fs::symlink(&target, &link).map_err(io)?;
    }
    Ok(())
}

fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|i| data.get(&i.key).map(|b| (i.path.clone(), b.clone())))
            .collect(),
        _ => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_four_fifths_of_their_life() {
        let cases = [
            (3607, 2885),
            (600, 480),
            (86_400 * 2, 86_400),
            (30, 24),
            (0, 1),
            (-5, 1),
        ];
        for (life, want) in cases {
            assert_eq!(renew_after(life), Duration::from_secs(want), "life {life}");
        }
    }

    #[test]
    fn certificates_are_pem_in_64_column_lines() {
        let pem = pem_certificates(&[vec![0u8; 60]]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 16);
        assert_eq!(lines[3], "-----END CERTIFICATE-----");
    }

    #[test]
    fn item_paths_stay_inside_the_volume() {
        let dir = std::env::temp_dir().join(format!("atoll-volume-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for bad in ["../x", "/etc/x", "a//b", "a/../../b", ""] {
            assert!(
                write_files(&dir, [(bad.to_string(), b"x".to_vec())]).is_err(),
                "{bad:?}"
            );
        }
        write_files(&dir, [("a/b".to_string(), b"x".to_vec())]).unwrap();
        assert_eq!(std::fs::read(dir.join("a/b")).unwrap(), b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sub_paths_are_relative_and_inside() {
        let dir = std::env::temp_dir().join(format!("atoll-subpath-test-{}", std::process::id()));
        let prepared = Prepared {
            volumes: BTreeMap::from([("v".to_string(), dir.clone())]),
            ..Default::default()
        };
        assert_eq!(mount_source(&prepared, "c", "v", None).unwrap(), dir);
        assert_eq!(mount_source(&prepared, "c", "v", Some("")).unwrap(), dir);
        assert_eq!(
            mount_source(&prepared, "c", "v", Some("a/b")).unwrap(),
            dir.join("a/b")
        );
        assert!(dir.join("a/b").is_dir());
        for bad in ["../x", "/x", "a/../../x"] {
            assert!(
                mount_source(&prepared, "c", "v", Some(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(
            mount_source(&prepared, "c", "w", None)
                .unwrap_err()
                .contains("does not define")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

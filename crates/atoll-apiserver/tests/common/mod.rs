//! Test harness: the real API server, in-process (tower service) or over TCP with TLS, and a
//! real `kube::Client` talking to it.

#![allow(dead_code)]

use std::sync::Arc;

use atoll_apiserver::{ApiServer, Config, Identity, Pki};
use atoll_store::{BackendKind, Options, Store};
use kube::Client;

pub struct Harness {
    pub server: Arc<ApiServer>,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

pub fn store(options: Options) -> Store {
    Store::open(BackendKind::Memory, options).expect("memory store")
}

/// The server with an in-process client that acts as the cluster admin.
pub async fn in_process(options: Options) -> Harness {
    in_process_with(
        options,
        Config {
            bookmark_interval: std::time::Duration::from_secs(3600),
            ..Config::default()
        },
    )
    .await
}

/// As [`in_process`], with a server configuration of the test's own.
pub async fn in_process_with(options: Options, config: Config) -> Harness {
    let server = ApiServer::start(store(options), config)
        .await
        .expect("server starts");
    let router = server.router();
    let svc = tower::ServiceBuilder::new()
        .map_request(|mut r: http::Request<kube::client::Body>| {
            r.extensions_mut().insert(Identity::admin());
            r
        })
        .service(router);
    let client = Client::new(svc, "default");
    Harness {
        server,
        client,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// The server behind a TLS listener on 127.0.0.1:0, with a client from a generated kubeconfig.
pub async fn over_tcp(options: Options) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ApiServer::start(
        store(options),
        Config {
            bookmark_interval: std::time::Duration::from_secs(3600),
            ..Config::default()
        },
    )
    .await
    .expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pki = Pki::load_or_create(&dir.path().join("pki"), &["127.0.0.1".into()]).expect("pki");
    let tls = pki.server_config().expect("tls config");
    tokio::spawn(atoll_apiserver::tls::serve(listener, tls, server.router()));
    let kubeconfig = pki
        .kubeconfig(
            &format!("https://127.0.0.1:{}", addr.port()),
            "test",
            "tester",
            &["system:masters".into()],
        )
        .expect("kubeconfig");
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig parses");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    let client = Client::try_from(config).expect("client");
    Harness {
        server,
        client,
        dir,
    }
}

/// A client of `h`'s server acting as `user` in `groups` (plus `system:authenticated`), as a
/// client certificate would make it.
pub fn client_as(h: &Harness, user: &str, groups: &[&str]) -> Client {
    let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    all.push("system:authenticated".into());
    let who = Identity {
        user: user.into(),
        groups: all,
    };
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut r: http::Request<kube::client::Body>| {
            r.extensions_mut().insert(who.clone());
            r
        })
        .service(h.server.router());
    Client::new(svc, "default")
}

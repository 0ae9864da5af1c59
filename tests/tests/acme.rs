//! Certificates over ACME against the rig's real Pebble: standalone and
//! cluster mode, HTTP-01 and TLS-ALPN-01, one certificate for three names,
//! renewal of short-lived certificates (a Pebble of the test's own), a
//! challenge that cannot succeed, and two operator replicas.
//!
//! Pebble validates HTTP-01 on 127.0.0.1:5002 and TLS-ALPN-01 on
//! 127.0.0.1:5001, so the data plane under test listens there and the
//! tests of this binary take [`PORTS`] one at a time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::Api;
use postern_api::ConditionStatus;
use postern_harness::{Backend, Postern, curl, curl_blocking, free_port, tmp_dir};
use postern_tests::resources::{delete, observe, patch_spec};
use postern_tests::spine::Spine;
use postern_tests::{Rig, dataplane, eventually, operator, rig_or_skip};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Ports 5001 and 5002 are Pebble's: one test at a time holds them.
static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Issuance against Pebble takes about a second; this bounds each wait.
const ISSUE: Duration = Duration::from_secs(60);

fn http01() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5002))
}

fn tls_alpn01() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5001))
}

/// The issuer flags for a Pebble at `directory`.
fn issuer_args(rig: &Rig, directory: &str) -> Vec<String> {
    let ca = rig.get("ACME_CA").expect("ACME_CA");
    vec![
        "--acme-issuer".into(),
        format!("pebble={directory}"),
        "--acme-ca-file".into(),
        format!("pebble={ca}"),
        "--acme-retry-base".into(),
        "2".into(),
    ]
}

/// The root that signs what a Pebble issues, from its management API.
/// The rig's Pebble directory URL.
fn directory_of(rig: &Rig) -> String {
    rig.get("ACME_DIRECTORY")
        .expect("ACME_DIRECTORY")
        .to_string()
}

/// The root of the rig's own Pebble, as [`pebble_root`] fetches it.
fn rig_pebble_root(rig: &Rig, label: &str) -> PathBuf {
    pebble_root(rig, rig.get("PEBBLE_MANAGEMENT").expect("mgmt"), label)
}

fn pebble_root(rig: &Rig, management: &str, label: &str) -> PathBuf {
    let ca = rig.get("ACME_CA").expect("ACME_CA");
    let out = tmp_dir(label).join("pebble-root.pem");
    let url = format!("{management}/roots/0");
    let got = curl_blocking(&["--cacert", ca, &url]);
    assert_eq!(got.status, 200, "pebble root: {got:?}");
    std::fs::write(&out, &got.body).expect("write root");
    out
}

/// `curl --cacert ROOT https://HOST:PORT/` resolved to loopback.
async fn curl_https(root: &Path, host: &str, port: u16) -> postern_harness::Curl {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/");
    let root = root.display().to_string();
    curl(&["--cacert", &root, "--resolve", &resolve, &url]).await
}

fn manifest(hostnames: &[&str], backend: &str, challenge: &str) -> String {
    format!(
        "apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  hostnames: {hostnames:?}\n  backend: {{url: \"{backend}\"}}\n  \
         tls: {{acme: {{issuer: pebble, challenge: {challenge}}}}}\n"
    )
}

fn issued_count(log: &str) -> usize {
    log.matches("certificate issued").count()
}

/// How long the order took, from the manager's log line.
fn issue_seconds(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("certificate issued"))?;
    let rest = line.split("seconds=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

async fn wait_issued(postern: &Postern, count: usize) {
    eventually("the certificate is issued", ISSUE, || async {
        let log = postern.log();
        if issued_count(&log) >= count {
            Ok(())
        } else {
            Err(log.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
        }
    })
    .await
}

async fn serves_https(root: &Path, host: &str, port: u16, body: &str) {
    eventually(
        &format!("https://{host} answers with a valid chain"),
        ISSUE,
        || async {
            let got = curl_https(root, host, port).await;
            if got.status == 200 && got.body.contains(body) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_http01_one_certificate_for_three_names_survives_a_restart() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let directory = directory_of(&rig);
    let root = rig_pebble_root(&rig, "acme-sa-http01");
    let site = Backend::text("site");
    let names = ["a.acme.test", "b.acme.test", "c.acme.test"];
    let state = tmp_dir("acme-sa-http01").join("state");
    let start = |files: Vec<(&'static str, String)>| {
        Postern::standalone_with("acme-sa-http01", &files)
            .listen("--http-addr", http01())
            .arg("--state-dir")
            .arg(&state)
            .args(issuer_args(&rig, &directory))
            .start()
    };
    let postern = start(vec![("t.yaml", manifest(&names, &site.url(), "http-01"))]).await;
    wait_issued(&postern, 1).await;
    eprintln!("issuance took {:?} s", issue_seconds(&postern.log()));
    for name in names {
        serves_https(&root, name, postern.https.port(), "site").await;
    }
    let stored = std::fs::read_dir(state.join("certificates"))
        .expect("certificates")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a stored certificate");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&stored).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", stored.display());
    let text = std::fs::read_to_string(&stored).expect("read");
    let leaf: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        leaf["state"]["hostnames"],
        json!(names),
        "one certificate, three SANs"
    );
    drop(postern);

    let again = start(vec![("t.yaml", manifest(&names, &site.url(), "http-01"))]).await;
    serves_https(&root, "b.acme.test", again.https.port(), "site").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        issued_count(&again.log()),
        0,
        "a restart orders nothing:\n{}",
        again.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_tls_alpn01_issues_on_the_https_listener() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let directory = directory_of(&rig);
    let root = rig_pebble_root(&rig, "acme-sa-alpn");
    let site = Backend::text("alpn-site");
    let postern = Postern::standalone_with(
        "acme-sa-alpn",
        &[(
            "t.yaml",
            manifest(&["alpn.acme.test"], &site.url(), "tls-alpn-01"),
        )],
    )
    .listen("--https-addr", tls_alpn01())
    .arg("--state-dir")
    .arg(tmp_dir("acme-sa-alpn").join("state"))
    .args(issuer_args(&rig, &directory))
    .start()
    .await;
    wait_issued(&postern, 1).await;
    assert!(
        postern
            .log()
            .contains("answered an ACME TLS-ALPN-01 challenge"),
        "{}",
        postern.log()
    );
    serves_https(&root, "alpn.acme.test", postern.https.port(), "alpn-site").await;
}

/// A Pebble of this test's own: short-lived certificates and Pebble's
/// default nonce rejection (5% of nonces refused, so instant-acme's badNonce
/// retries run), killed on drop.
struct OwnPebble {
    child: Child,
    log: PathBuf,
    directory: String,
    management: String,
}

fn pebble_log(pebble: &OwnPebble) -> &Path {
    &pebble.log
}

impl Drop for OwnPebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn own_pebble(rig: &Rig, validity_secs: u64) -> OwnPebble {
    let dir = tmp_dir("acme-own-pebble");
    let pki = PathBuf::from(rig.get("RIG_DIR").expect("RIG_DIR")).join("pki");
    let (port, mgmt) = (free_port(), free_port());
    let config = json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": pki.join("pebble.crt"),
        "privateKey": pki.join("pebble.key"),
        "httpPort": 5002, "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": validity_secs,
    }});
    let path = dir.join("pebble.json");
    std::fs::write(&path, config.to_string()).expect("config");
    let log = std::fs::File::create(dir.join("pebble.log")).expect("log");
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&path)
        .args(["-dnsserver", rig.get("PEBBLE_DNS").expect("PEBBLE_DNS")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_AUTHZREUSE", "0")
        .env_remove("PEBBLE_WFE_NONCEREJECT")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("pebble");
    let pebble = OwnPebble {
        child,
        log: dir.join("pebble.log"),
        directory: format!("https://127.0.0.1:{port}/dir"),
        management: format!("https://127.0.0.1:{mgmt}"),
    };
    let ca = rig.get("ACME_CA").expect("ACME_CA").to_string();
    let dir_url = pebble.directory.clone();
    eventually("our pebble answers", Duration::from_secs(20), || async {
        let got = curl(&["--cacert", &ca, &dir_url]).await;
        if got.status == 200 {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    pebble
}

/// A TLS connection to `port` for `host`, verified against `root`; its leaf.
async fn connect(
    root: &Path,
    host: &str,
    port: u16,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).expect("root pem") {
        roots.add(cert.expect("root")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from(host.to_string()).expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    (send, leaf)
}

async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> (u16, String) {
    let req = http::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until a new connection to `port` gets another leaf than `first`.
async fn renewed(root: &Path, host: &str, port: u16, first: &[u8]) -> Vec<u8> {
    eventually(
        "new connections get the renewed certificate",
        ISSUE,
        || async {
            let (_, leaf) = connect(root, host, port).await;
            if leaf != first {
                Ok(leaf)
            } else {
                Err("still the first certificate".to_string())
            }
        },
    )
    .await
}

/// Waits until an Event with `reason` names ProxyTarget `web`.
async fn event_seen(spine: &Spine, reason: &str) {
    let events: Api<Event> = Api::namespaced(spine.client.clone(), spine.ns());
    eventually(&format!("a {reason} Event"), ISSUE, || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let seen = list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some("web")
        });
        let reasons: Vec<_> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        if seen {
            Ok(())
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_renew_without_dropping_open_connections() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let pebble = own_pebble(&rig, 30).await;
    let root = pebble_root(&rig, &pebble.management, "acme-renew");
    let site = Backend::text("renewed-site");
    let host = "renew.acme.test";
    let postern = Postern::standalone_with(
        "acme-renew",
        &[("t.yaml", manifest(&[host], &site.url(), "http-01"))],
    )
    .listen("--http-addr", http01())
    .arg("--state-dir")
    .arg(tmp_dir("acme-renew").join("state"))
    .args(issuer_args(&rig, &pebble.directory))
    .start()
    .await;
    wait_issued(&postern, 1).await;
    serves_https(&root, host, postern.https.port(), "renewed-site").await;
    let (mut open, first) = connect(&root, host, postern.https.port()).await;
    assert_eq!(get(&mut open, host).await.0, 200);
    // 30 s certificates renew with a third (10 s) left.
    wait_issued(&postern, 2).await;
    let second = renewed(&root, host, postern.https.port(), &first).await;
    assert_ne!(first, second);
    let (status, body) = get(&mut open, host).await;
    let pebble_log = std::fs::read_to_string(pebble_log(&pebble)).unwrap_or_default();
    assert!(
        pebble_log.contains("reject 5% of good nonces"),
        "Pebble's default nonce rejection is on, so badNonce retries ran: {pebble_log}"
    );
    assert_eq!(
        (status, body.contains("renewed-site")),
        (200, true),
        "the open connection still serves"
    );
}

/// The cluster fixture: an operator with the Pebble issuer, a data plane on
/// `http` (Pebble's port or not) and a backend.
async fn cluster(rig: Rig, prefix: &str, http: SocketAddr) -> Spine {
    let directory = directory_of(&rig);
    cluster_on(rig, prefix, http, &directory).await
}

/// [`cluster`] against the ACME server at `directory`.
async fn cluster_on(rig: Rig, prefix: &str, http: SocketAddr, directory: &str) -> Spine {
    let args = issuer_args(&rig, directory);
    let mut spine = Spine::operator_with_args(rig, prefix, &args).await;
    let dp = dataplane(spine.operator.sync, &format!("{prefix}-dp-1"), &spine.token)
        .listen("--http-addr", http)
        .start()
        .await;
    spine.dataplanes.push(dp);
    spine
}

async fn certificate_ready(spine: &Spine, status: ConditionStatus, reason: &str) -> String {
    eventually(
        &format!("CertificateReady={status:?} {reason}"),
        ISSUE,
        || async {
            let observed = observe(&spine.client, spine.ns(), "ProxyTarget", "web").await?;
            match observed.condition("CertificateReady") {
                Some(c) if c.status == status && c.reason == reason => Ok(c.message.clone()),
                _ => Err(format!("{observed:?}")),
            }
        },
    )
    .await
}

fn target(hostnames: &[&str], backend: &str) -> serde_json::Value {
    json!({"kind": "ProxyTarget", "metadata": {"name": "web"}, "spec": {
        "hostnames": hostnames,
        "backend": {"url": backend},
        "tls": {"acme": {"issuer": "pebble"}},
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_http01_stores_an_owned_secret_and_reports_ready() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let root = rig_pebble_root(&rig, "acme-cluster");
    let spine = cluster(rig, "acme-cl", http01()).await;
    let site = Backend::text("cluster-site");
    spine.create(target(&["web.acme.test"], &site.url())).await;
    let message = certificate_ready(&spine, ConditionStatus::True, "Issued").await;
    assert!(message.contains("valid until"), "{message}");
    let observed = observe(&spine.client, spine.ns(), "ProxyTarget", "web")
        .await
        .expect("target");
    assert!(observed.status.certificate.is_some(), "{observed:?}");
    let secrets: Api<Secret> = Api::namespaced(spine.client.clone(), spine.ns());
    let secret = secrets
        .get("web-acme-tls")
        .await
        .expect("the certificate Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ProxyTarget", "web")
    );
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    for key in [
        "postern.io/acme-issuer",
        "postern.io/acme-not-after",
        "postern.io/acme-renew-after",
    ] {
        assert!(annotations.contains_key(key), "{key} in {annotations:?}");
    }
    serves_https(
        &root,
        "web.acme.test",
        spine.dataplane().https.port(),
        "cluster-site",
    )
    .await;
    event_seen(&spine, "Issued").await;

    // A new hostname orders a new certificate covering both.
    let both = json!({"hostnames": ["web.acme.test", "www.acme.test"]});
    patch_spec(&spine.client, spine.ns(), "ProxyTarget", "web", both).await;
    eventually("the certificate covers the new name", ISSUE, || async {
        let observed = observe(&spine.client, spine.ns(), "ProxyTarget", "web").await?;
        match observed.condition("CertificateReady") {
            Some(c) if c.status == ConditionStatus::True && c.message.contains("www.acme.test") => {
                Ok(())
            }
            _ => Err(format!("{observed:?}")),
        }
    })
    .await;
    serves_https(
        &root,
        "www.acme.test",
        spine.dataplane().https.port(),
        "cluster-site",
    )
    .await;

    delete(&spine.client, spine.ns(), "ProxyTarget", "web").await;
    eventually("garbage collection deletes the Secret", ISSUE, || async {
        match secrets.get_opt("web-acme-tls").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswerable_challenge_reports_pebbles_error_and_http_keeps_serving() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    // The data plane is not on Pebble's port: validation cannot connect.
    let spine = cluster(rig, "acme-fail", SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let site = Backend::text("still-serving");
    spine.create(target(&["fail.acme.test"], &site.url())).await;
    let message = certificate_ready(&spine, ConditionStatus::False, "Failed").await;
    assert!(
        message.contains("urn:ietf:params:acme:error:"),
        "the ACME problem type: {message}"
    );
    let http = spine.dataplane().http;
    let (status, body) = postern_tests::serving::get(http, "fail.acme.test", "/").await;
    assert_eq!((status, body.contains("still-serving")), (200, true));
    let observed = observe(&spine.client, spine.ns(), "ProxyTarget", "web")
        .await
        .expect("target");
    let accepted = observed.condition("Accepted").expect("Accepted");
    assert_eq!(accepted.status, ConditionStatus::True, "{observed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_issuers_and_wildcards_are_reported() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let spine = cluster(rig, "acme-policy", SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let site = Backend::text("policy");
    spine
        .create(
            json!({"kind": "ProxyTarget", "metadata": {"name": "nope"}, "spec": {
                "hostnames": ["nope.acme.test"], "backend": {"url": site.url()},
                "tls": {"acme": {"issuer": "nowhere"}},
            }}),
        )
        .await;
    spine
        .accepted(
            "ProxyTarget",
            "nope",
            ConditionStatus::False,
            "UnknownIssuer",
        )
        .await;
    spine
        .create(target(&["*.wild.acme.test"], &site.url()))
        .await;
    let message = certificate_ready(&spine, ConditionStatus::False, "DNS01Required").await;
    assert!(message.contains("*.wild.acme.test"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_order_exactly_once() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let directory = directory_of(&rig);
    let spine = cluster(rig.clone(), "acme-ha", http01()).await;
    // The first operator holds the lease before the second starts.
    eventually("the first operator leads", ISSUE, || async {
        let metrics = admin_metrics(spine.operator.admin).await;
        if metrics.contains("postern_operator_leader 1") {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    let second = operator(&rig, spine.ns(), "acme-ha-op-2", &spine.token)
        .args(issuer_args(&rig, &directory))
        .start()
        .await;
    let site = Backend::text("ha");
    spine.create(target(&["ha.acme.test"], &site.url())).await;
    certificate_ready(&spine, ConditionStatus::True, "Issued").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let issued = |m: &str| {
        postern_harness::metric_value(m, r#"postern_operator_acme_orders_total{result="issued"}"#)
            .unwrap_or(0.0)
    };
    let first = issued(&admin_metrics(spine.operator.admin).await);
    let other = issued(&admin_metrics(second.admin).await);
    assert_eq!(
        (first, other),
        (1.0, 0.0),
        "exactly one order, by the leader"
    );
}

async fn admin_metrics(admin: SocketAddr) -> String {
    curl(&[&format!("http://{admin}/metrics")]).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_renewal_updates_the_secret_and_records_an_event() {
    let rig = rig_or_skip!();
    let _ports = PORTS.lock().await;
    let pebble = own_pebble(&rig, 30).await;
    let root = pebble_root(&rig, &pebble.management, "acme-cl-renew");
    let spine = cluster_on(rig, "acme-clr", http01(), &pebble.directory).await;
    let site = Backend::text("cluster-renewed");
    let host = "renew.cluster.acme.test";
    spine.create(target(&[host], &site.url())).await;
    certificate_ready(&spine, ConditionStatus::True, "Issued").await;
    let port = spine.dataplane().https.port();
    serves_https(&root, host, port, "cluster-renewed").await;
    let (mut open, first) = connect(&root, host, port).await;
    renewed(&root, host, port, &first).await;
    let (status, body) = get(&mut open, host).await;
    assert_eq!(
        (status, body.contains("cluster-renewed")),
        (200, true),
        "the open connection still serves"
    );
    event_seen(&spine, "Renewed").await;
}

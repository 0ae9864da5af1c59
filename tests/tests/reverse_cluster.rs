//! The reverse proxy in cluster mode: ProxyTargets, Routes and
//! `kubernetes.io/tls` Secrets applied to the rig's API server, compiled by
//! a real operator and served by a real data plane process on its
//! `--http-addr` and `--https-addr`. Backends are small HTTP servers on
//! loopback; clients are hyper, rustls and curl.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use postern_harness::{Backend, Ca, Leaf, tmp_dir};
use postern_tests::resources::patch_spec;
use postern_tests::spine::{Spine, WAIT};
use postern_tests::{eventually, rig_or_skip};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Every exchange with the data plane is bounded by this.
const EXCHANGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_target_and_its_route_become_routable_through_the_dataplane() {
    let spine = Spine::start(rig_or_skip!(), "rev-route").await;
    let site = Backend::text("site");
    let v1 = Backend::text("v1");
    spine
        .create(
            json!({"kind": "ProxyTarget", "metadata": {"name": "web"}, "spec": {
                "hostnames": ["web.example.test"],
                "backend": {"url": site.url()},
            }}),
        )
        .await;
    spine
        .create(
            json!({"kind": "Route", "metadata": {"name": "web-v1"}, "spec": {
                "targetRef": {"name": "web"},
                "match": {"path": {"type": "Prefix", "value": "/v1"}},
                "priority": 50,
                "backend": {"url": v1.url()},
            }}),
        )
        .await;
    spine.programmed("ProxyTarget", "web", 1, WAIT).await;
    spine.programmed("Route", "web-v1", 1, WAIT).await;

    let http = spine.dataplane().http;
    routed_to(http, "web.example.test", "/v1/items", "v1 /v1/items").await;
    for (host, path, want) in [
        ("web.example.test", "/v1", "v1 /v1"),
        ("web.example.test", "/", "site /"),
        ("web.example.test", "/v10", "site /v10"),
        ("web.example.test", "/other/v1", "site /other/v1"),
        ("WEB.Example.TEST:8080", "/v1/x", "v1 /v1/x"),
    ] {
        let got = get(http, host, path).await;
        assert_eq!(got, Ok((200, want.to_string())), "{host}{path}");
    }
    let unknown = get(http, "nobody.example.test", "/").await.expect("GET");
    assert_eq!(unknown.0, 404, "{}", unknown.1);

    // A change to the Route is routed too, without restarting anything.
    patch_spec(
        &spine.client,
        spine.ns(),
        "Route",
        "web-v1",
        json!({"match": {"path": {"type": "Prefix", "value": "/v2"}}}),
    )
    .await;
    spine.programmed("Route", "web-v1", 2, WAIT).await;
    routed_to(http, "web.example.test", "/v1/items", "site /v1/items").await;
    let got = get(http, "web.example.test", "/v2/items").await;
    assert_eq!(got, Ok((200, "v1 /v2/items".to_string())));
    spine.ns.cleanup(&spine.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_secret_is_served_and_its_rotation_keeps_open_connections() {
    const HOST: &str = "secure.example.test";
    let spine = Spine::start(rig_or_skip!(), "rev-tls").await;
    let backend = Backend::text("secure");
    let ca = Ca::new("reverse-cluster test CA");
    let first = ca.leaf(&[HOST]);
    apply_tls_secret(&spine, "secure-tls", &first).await;
    spine
        .create(
            json!({"kind": "ProxyTarget", "metadata": {"name": "secure"}, "spec": {
                "hostnames": [HOST],
                "backend": {"url": backend.url()},
                "tls": {"secretRef": {"name": "secure-tls"}},
            }}),
        )
        .await;
    spine.programmed("ProxyTarget", "secure", 1, WAIT).await;

    let https = spine.dataplane().https;
    let ca_file = ca.write(&tmp_dir(spine.ns()));
    let url = format!("https://{HOST}:{}/hello", https.port());
    let resolve = format!("{HOST}:{}:127.0.0.1", https.port());
    let curl_args = ["--resolve", &resolve, "--cacert", path_str(&ca_file), &url];
    let body = eventually("curl over TLS with the Secret's certificate", WAIT, || {
        curl(&curl_args)
    })
    .await;
    assert_eq!(body, "secure /hello");

    // A keep-alive HTTP/1.1 connection over TLS, opened before the rotation.
    let connector = ca.connector(&[b"http/1.1"]);
    let open = handshake(&connector, https, HOST).await.expect("handshake");
    assert_eq!(served(&open), first.der, "the first certificate is served");
    let mut held = http1(open).await;
    let answer = send(&mut held, HOST, "/before").await;
    assert_eq!(answer, Ok((200, "secure /before".to_string())));

    let second = ca.leaf(&[HOST]);
    assert_ne!(first.der, second.der);
    apply_tls_secret(&spine, "secure-tls", &second).await;
    eventually(
        "a new handshake to get the rotated certificate",
        WAIT,
        || {
            let connector = connector.clone();
            let (want, old) = (second.der.clone(), first.der.clone());
            async move {
                let fresh = handshake(&connector, https, HOST).await?;
                let got = served(&fresh);
                if got == want {
                    Ok(())
                } else if got == old {
                    Err("still the first certificate".to_string())
                } else {
                    Err("a certificate that is neither".to_string())
                }
            }
        },
    )
    .await;

    let answer = send(&mut held, HOST, "/after").await;
    assert_eq!(
        answer,
        Ok((200, "secure /after".to_string())),
        "the connection opened before the rotation still serves"
    );
    assert_eq!(curl(&curl_args).await, Ok("secure /hello".to_string()));
    spine.ns.cleanup(&spine.client).await;
}

/// Waits until `GET host path` answers 200 with `want`.
async fn routed_to(addr: SocketAddr, host: &str, path: &str, want: &str) {
    let what = format!("http://{host}{path} to answer {want:?}");
    eventually(&what, WAIT, || async {
        match get(addr, host, path).await? {
            (200, body) if body == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// `GET path` with `Host: host` on a new connection: status and body.
async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut sender = http1(stream).await;
    send(&mut sender, host, path).await
}

/// An HTTP/1.1 client connection over `io`, driven on its own task.
async fn http1<I>(io: I) -> SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

/// One request on an open connection: status and body, within [`EXCHANGE`].
async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {host}{path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body of {host}{path}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(EXCHANGE, exchange)
        .await
        .map_err(|_| format!("GET {host}{path} timed out"))?
}

/// A TLS handshake with `sni` on a new connection to `addr`.
async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    };
    tokio::time::timeout(EXCHANGE, connect)
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))
}

/// The DER of the leaf certificate the server presented.
fn served(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("certificates");
    certs.first().expect("a leaf").to_vec()
}

/// curl's body for `args`, or its error output.
async fn curl(args: &[&str]) -> Result<String, String> {
    let out = postern_harness::curl(args).await;
    if out.exit == 0 {
        Ok(out.body)
    } else {
        Err(out.stderr)
    }
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Creates or replaces a `kubernetes.io/tls` Secret holding `leaf`.
async fn apply_tls_secret(spine: &Spine, name: &str, leaf: &Leaf) {
    let data = [("tls.crt", &leaf.cert), ("tls.key", &leaf.key)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect::<BTreeMap<_, _>>();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(spine.ns().into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(spine.client.clone(), spine.ns())
        .patch(
            name,
            &PatchParams::apply("postern-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("applying Secret {name}: {e}"));
}

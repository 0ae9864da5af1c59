//! The request log with real parts: the Redis store written and queried
//! through [`RequestLog`] (each index, retention by size and age, unique
//! visitors, minutes), and `postern standalone` on a Redis: requests
//! recorded with what the client saw, and the request path untouched
//! while Redis is down (records dropped and counted, then written again
//! once it is back).

use std::sync::Arc;
use std::time::Duration;

use postern::reqlog::{Filter, Kind, Record, RequestLog, Status, now_ms};
use postern_harness::oauth::redis_server;
use postern_harness::{Backend, Launch, Postern, curl, eventually, free_port, loopback, peer};
use postern_harness::{target_yaml, wait_port};
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3600);
const PATIENCE: Duration = Duration::from_secs(15);

fn record(i: u64, time: u64, host: &str, client: &str, status: u16) -> Record {
    Record {
        time,
        kind: Kind::Http,
        request_id: format!("r{i}"),
        client: client.parse().expect("an address"),
        host: host.into(),
        method: Some("GET".into()),
        path: Some(format!("/item/{i}")),
        status: Some(status),
        bytes_in: 0,
        bytes_out: i,
        duration_ms: 1,
        site: Some("default/site".into()),
        route: None,
        upstream: Some("http://127.0.0.1:9".into()),
        user: None,
        outcome: "ok".into(),
    }
}

/// A log with its writer running until the token is cancelled.
fn running(log: RequestLog) -> (Arc<RequestLog>, CancellationToken) {
    let log = Arc::new(log);
    let stop = CancellationToken::new();
    tokio::spawn(log.clone().run(stop.clone()));
    (log, stop)
}

fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.request_id.clone()).collect()
}

/// Waits until a query answers `n` records, and returns them.
async fn until_count(log: &RequestLog, filter: &Filter, n: usize) -> Vec<Record> {
    eventually("records in the store", PATIENCE, || async {
        let found = log.query(filter).await.map_err(|e| e.to_string())?;
        if found.len() == n {
            Ok(found)
        } else {
            Err(format!("{} records", found.len()))
        }
    })
    .await
}

fn all() -> Filter {
    Filter {
        limit: 1000,
        ..Filter::default()
    }
}

#[tokio::test]
async fn the_redis_store_answers_through_every_index() {
    let Some(redis) = redis_server().await else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (log, _stop) = running(RequestLog::redis(&url, 10_000, HOUR).expect("url"));
    let now = now_ms();
    let written: Vec<Record> = (0..40u64)
        .map(|i| {
            let host = if i % 2 == 0 { "a.test" } else { "b.test" };
            let mut r = record(
                i,
                now - 40 + i,
                host,
                &format!("10.0.0.{}", i % 4),
                [200, 404, 503][i as usize % 3],
            );
            r.user = (i % 5 == 0).then(|| "alice".to_string());
            r
        })
        .collect();
    for r in &written {
        log.record(r.clone());
    }
    let everything = until_count(&log, &all(), 40).await;
    let newest_first: Vec<Record> = written.iter().rev().cloned().collect();
    assert_eq!(ids(&everything), ids(&newest_first));
    assert_eq!(everything[0], newest_first[0], "a record comes back whole");

    let cases = [
        ("host=a.test", 20),
        ("ip=10.0.0.1", 10),
        ("user=alice", 8),
        ("status=404", 13),
        ("status=5xx", 13),
        ("status=2xx", 14),
        ("host=b.test&status=5xx&ip=10.0.0.1", 3),
        ("host=c.test", 0),
    ];
    for (query, n) in cases {
        let mut filter = Filter::parse(Some(query), now_ms()).expect(query);
        filter.limit = 1000;
        let found = log.query(&filter).await.expect(query);
        let want: Vec<Record> = newest_first
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        assert_eq!(found.len(), n, "{query}");
        assert_eq!(ids(&found), ids(&want), "{query}");
    }
    let limited = Filter {
        status: Some(Status::Class(5)),
        limit: 2,
        ..Filter::default()
    };
    let found = log.query(&limited).await.expect("limited");
    assert_eq!(ids(&found), ["r38", "r35"]);
    let since = Filter {
        since: Some(now - 5),
        ..all()
    };
    assert_eq!(
        ids(&log.query(&since).await.expect("since")),
        ["r39", "r38", "r37", "r36", "r35"]
    );

    assert_eq!(
        log.visitors("a.test").await.expect("visitors"),
        2,
        "10.0.0.0 and .2"
    );
    assert_eq!(log.visitors("B.test").await.expect("visitors"), 2);
    assert_eq!(log.visitors("nobody.test").await.expect("visitors"), 0);
    let minutes = log.per_minute().await;
    assert_eq!(minutes.len(), 60);
    let total: u64 = minutes.iter().map(|m| m.total).sum();
    let errors: u64 = minutes.iter().map(|m| m.errors).sum();
    assert_eq!((total, errors), (40, 13));
}

#[tokio::test]
async fn the_redis_store_keeps_the_newest_records_within_its_size_and_age() {
    let Some(redis) = redis_server().await else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (log, _stop) = running(RequestLog::redis(&url, 50, HOUR).expect("url"));
    let now = now_ms();
    // Two hours old: beyond the retention from the start.
    log.record(record(
        1000,
        now - 2 * 3_600_000,
        "old.test",
        "10.0.0.9",
        200,
    ));
    for i in 0..300u64 {
        log.record(record(i, now - 300 + i, "big.test", "10.1.0.1", 200));
    }
    let by_host = Filter {
        host: Some("big.test".into()),
        ..all()
    };
    let kept = until_count(&log, &by_host, 50).await;
    let newest: Vec<String> = (250..300).rev().map(|i| format!("r{i}")).collect();
    assert_eq!(ids(&kept), newest, "the index keeps exactly the newest 50");
    // The stream is trimmed with `MAXLEN ~`: whole nodes, so roughly.
    let everything = log.query(&all()).await.expect("all");
    assert!(
        (50..300).contains(&everything.len()),
        "{} records kept",
        everything.len()
    );
    assert_eq!(ids(&everything[..50]), newest);
    let old = Filter {
        host: Some("old.test".into()),
        ..all()
    };
    assert!(
        log.query(&old).await.expect("old").is_empty(),
        "older than the retention"
    );
}

/// `postern standalone` on one site, with extra flags.
async fn gateway(label: &str, backend: &Backend, args: &[String]) -> Postern {
    let site = target_yaml("app", &["app.test"], &backend.url(), "");
    Postern::standalone_with(label, &[("site.yaml", site)])
        .args(args)
        .start()
        .await
}

async fn get(p: &Postern, host: &str, path: &str) -> postern_harness::Curl {
    let url = format!("http://{}{path}", p.http);
    curl(&["-s", "-H", &format!("Host: {host}"), &url]).await
}

#[tokio::test]
async fn requests_through_the_data_plane_are_recorded_in_redis() {
    let Some(redis) = redis_server().await else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let backend = Backend::start("app");
    let p = gateway("reqlog-e2e", &backend, &["--redis-url".into(), url.clone()]).await;
    let ok = get(&p, "app.test", "/hello?x=1").await;
    assert_eq!(ok.status, 200, "{}", ok.stderr);
    let upload = "u".repeat(1000);
    let url_post = format!("http://{}/upload", p.http);
    let posted = curl(&[
        "-s",
        "-H",
        "Host: app.test",
        "--data-binary",
        &upload,
        &url_post,
    ])
    .await;
    assert_eq!(posted.status, 200);
    let unknown = get(&p, "nowhere.test", "/").await;
    assert_eq!(unknown.status, 404);

    // Another process on the same Redis sees what the data plane wrote.
    let reader = RequestLog::redis(&url, 10_000, HOUR).expect("url");
    let mut filter = Filter::parse(Some("host=app.test"), now_ms()).expect("filter");
    filter.since = Some(now_ms() - 60_000);
    let found = until_count(&reader, &filter, 2).await;
    let (post, hello) = (&found[0], &found[1]);
    assert_eq!(hello.kind, Kind::Http);
    assert_eq!(hello.method.as_deref(), Some("GET"));
    assert_eq!(hello.path.as_deref(), Some("/hello"));
    assert_eq!(hello.status, Some(200));
    assert_eq!(hello.client.to_string(), "127.0.0.1");
    assert_eq!(hello.site.as_deref(), Some("default/app"));
    assert_eq!(hello.upstream.as_deref(), Some(backend.url().as_str()));
    assert_eq!(hello.outcome, "ok");
    assert_eq!(hello.bytes_out, ok.body.len() as u64);
    assert_eq!(Some(hello.request_id.as_str()), ok.header("x-request-id"));
    assert_eq!(post.path.as_deref(), Some("/upload"));
    assert_eq!(post.bytes_in, 1000);
    let refused = until_count(
        &reader,
        &Filter::parse(Some("status=404"), now_ms()).expect("404"),
        1,
    )
    .await;
    assert_eq!(refused[0].host, "nowhere.test");
    assert_eq!(refused[0].outcome, "unknown_host");
    assert_eq!(refused[0].site, None);
    assert!(p.metric("postern_request_log_records_total").await >= 3.0);
}

fn redis_on(port: u16) -> Option<postern_harness::Proc> {
    let server = peer("redis-server")?;
    Some(
        Launch::new("redis-server", server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .spawn(),
    )
}

#[tokio::test]
async fn requests_pass_while_redis_is_down_and_records_come_back_with_it() {
    if peer("redis-server").is_none() {
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let backend = Backend::start("app");
    let p = gateway(
        "reqlog-down",
        &backend,
        &["--redis-url".into(), url.clone()],
    )
    .await;
    for _ in 0..5 {
        let r = get(&p, "app.test", "/while-down").await;
        assert_eq!(r.status, 200, "{}", r.stderr);
    }
    let dropped = r#"postern_request_log_dropped_total{reason="store_unavailable"}"#;
    eventually("dropped records counted", PATIENCE, || async {
        let n = p.metric(dropped).await;
        if n >= 5.0 { Ok(n) } else { Err(n) }
    })
    .await;
    assert_eq!(p.metric("postern_request_log_records_total").await, 0.0);

    let _redis = redis_on(port);
    wait_port(loopback(port)).await;
    let reader = RequestLog::redis(&url, 10_000, HOUR).expect("url");
    let filter = Filter::parse(Some("host=app.test"), now_ms()).expect("filter");
    eventually(
        "a record written after Redis came back",
        PATIENCE,
        || async {
            let r = get(&p, "app.test", "/after").await;
            assert_eq!(r.status, 200);
            let found = reader.query(&filter).await.map_err(|e| e.to_string())?;
            if found.iter().any(|r| r.path.as_deref() == Some("/after")) {
                Ok(())
            } else {
                Err(format!("{} records", found.len()))
            }
        },
    )
    .await;
    assert!(p.metric("postern_request_log_records_total").await >= 1.0);
    let warned = p.log();
    assert!(
        warned.contains("request log: the store cannot be written"),
        "{warned}"
    );
}

#[tokio::test]
async fn forward_proxy_connections_are_recorded_and_served_by_the_admin_api() {
    use postern_harness::{LOOPBACK_ALLOWED, http::admin_get, user_yaml};
    let backend = Backend::start("dest");
    let user = user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED);
    let p = Postern::standalone_with("reqlog-forward", &[("alice.yaml", user)])
        .start()
        .await;
    let proxy = p.proxy_url("alice", "pw");
    let tunnelled = curl(&[
        "-s",
        "-p",
        "-x",
        &proxy,
        &format!("{}/through", backend.url()),
    ])
    .await;
    assert_eq!(tunnelled.status, 200, "{}", tunnelled.stderr);
    let plain = curl(&["-s", "-x", &proxy, &format!("{}/plain", backend.url())]).await;
    assert_eq!(plain.status, 200, "{}", plain.stderr);

    let items = eventually("two records of alice", PATIENCE, || async {
        let r = admin_get(p.admin, "/api/v1/requests?user=alice").await?;
        let json = r.json()?;
        let items = json["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2 {
            Ok(items)
        } else {
            Err(format!("{}: {}", r.status, r.body))
        }
    })
    .await;
    let connect = items
        .iter()
        .find(|r| r["method"] == "CONNECT")
        .expect("the CONNECT");
    let absolute = items
        .iter()
        .find(|r| r["method"] == "GET")
        .expect("the GET");
    for record in [connect, absolute] {
        assert_eq!(record["kind"], "connect");
        assert_eq!(record["host"], "127.0.0.1");
        assert_eq!(record["client"], "127.0.0.1");
        assert_eq!(record["status"], 200);
        assert_eq!(record["outcome"], "ok");
        assert!(
            record["bytesOut"].as_u64().is_some_and(|n| n > 0),
            "{record}"
        );
    }
    assert_eq!(connect["path"], serde_json::Value::Null);
    assert_eq!(absolute["path"], "/plain");
    let bad = admin_get(p.admin, "/api/v1/requests?status=abc")
        .await
        .expect("an answer");
    assert_eq!(bad.status, 400, "{}", bad.body);
}

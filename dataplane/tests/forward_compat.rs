//! The UpstreamGate-compatible `/upstream` API on the admin port, in
//! standalone mode: bearer token, status codes, users written to (and
//! removed from) the manifests folder, applied live and kept over a restart.

use postern_harness::peers::microsocks;
use postern_harness::{
    LOOPBACK_ALLOWED, PATIENCE, Postern, call, curl, http_target, tmp_dir, user_yaml, wait_for,
};

const TOKEN: &str = "s3cret-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreamgate_scripts_keep_working() {
    let dir = tmp_dir("compat");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let token_flag = format!("--admin-token-file={}", token_file.display());
    let files = [(
        "alice.yaml",
        user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
    )];
    let p = Postern::standalone_with("compat", &files)
        .json_logs()
        .arg(&token_flag)
        .start()
        .await;
    let target = http_target().await;
    let url = format!("http://{target}/");
    let bob = r#"{"user":"bob","password":"pw2","upstream":"direct://"}"#;

    assert_eq!(call(p.admin, "POST", "/upstream", None, bob).await.0, 401);
    assert_eq!(
        call(p.admin, "POST", "/upstream", Some("wrong"), bob)
            .await
            .0,
        401
    );
    assert_eq!(
        call(p.admin, "POST", "/upstream", Some(TOKEN), "{not json")
            .await
            .0,
        400
    );
    let ftp = r#"{"user":"bob","password":"pw2","upstream":"ftp://127.0.0.1:21"}"#;
    assert_eq!(
        call(p.admin, "POST", "/upstream", Some(TOKEN), ftp).await.0,
        400
    );
    assert_eq!(
        call(p.admin, "PUT", "/upstream", Some(TOKEN), bob).await.0,
        405
    );
    assert_eq!(
        call(p.admin, "GET", "/upstream/bob", Some(TOKEN), "")
            .await
            .0,
        405
    );

    // Answered with the compiler's verdict, not 204 then refused: alice is
    // defined by another manifest, so a second alice is a conflict (409,
    // naming it) and nothing is written.
    let alice = r#"{"user":"alice","password":"pw3","upstream":"direct://"}"#;
    let (status, body) = call(p.admin, "POST", "/upstream", Some(TOKEN), alice).await;
    assert_eq!(status, 409, "a duplicate user: {body}");
    assert!(body.contains("alice"), "{body}");
    assert!(!p.manifests().join("upstreamgate-alice.yaml").exists());

    // A user with inline upstream credentials, through microsocks when installed.
    let socks = microsocks(Some(("su", "sp")), Some("127.0.0.8")).await;
    let (upstream, via) = match &socks {
        Some((_, addr)) => (format!("socks5://su:sp@{addr}"), "127.0.0.8"),
        None => ("direct://".to_string(), "127.0.0.1"),
    };
    let body = format!(r#"{{"user":"bob","password":"pw2","upstream":"{upstream}"}}"#);
    assert_eq!(
        call(p.admin, "POST", "/upstream", Some(TOKEN), &body)
            .await
            .0,
        204
    );
    let bob_file = p.manifests().join("upstreamgate-bob.yaml");
    assert!(bob_file.is_file());
    // A user of the API is denied loopback, as every user is by default...
    wait_for("bob to be served", PATIENCE, || async {
        let out = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
        (out.status == 403).then_some(out)
    })
    .await;
    // ...until the admin grants it (the targets here listen on loopback).
    let granted = allow_loopback(&std::fs::read_to_string(&bob_file).expect("bob's manifest"));
    p.write("upstreamgate-bob.yaml", &granted);
    let out = wait_for("bob to work", PATIENCE, || async {
        let out = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
        (out.status == 200).then_some(out)
    })
    .await;
    assert_eq!(out.body, format!("hello from {via}"));

    let (status, listed) = call(p.admin, "GET", "/upstream", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let users: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    let text = listed.to_string();
    assert!(
        !text.contains("pw2") && !text.contains("sp@") && !text.contains("\"sp\""),
        "{text}"
    );

    // Kept over a restart: the file is in the manifests folder.
    let manifests = p.manifests().to_path_buf();
    drop(p);
    let p = Postern::standalone(&manifests)
        .json_logs()
        .arg(&token_flag)
        .start()
        .await;
    let out = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
    assert_eq!(out.body, format!("hello from {via}"), "{out:?}");

    assert_eq!(
        call(p.admin, "DELETE", "/upstream/alice", Some(TOKEN), "")
            .await
            .0,
        409
    );
    assert_eq!(
        call(p.admin, "DELETE", "/upstream/nobody", Some(TOKEN), "")
            .await
            .0,
        404
    );
    assert_eq!(
        call(p.admin, "DELETE", "/upstream/bob", Some(TOKEN), "")
            .await
            .0,
        204
    );
    wait_for("bob to be gone", PATIENCE, || async {
        let out = curl(&["-x", &p.proxy_url("bob", "pw2"), &url]).await;
        (out.status == 407).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_closed() {
    let files = [(
        "a.yaml",
        user_yaml("alice", "pw", "direct://", None, LOOPBACK_ALLOWED),
    )];
    let p = Postern::standalone_with("compat-closed", &files)
        .json_logs()
        .start()
        .await;
    let body = r#"{"user":"eve","password":"x","upstream":"direct://"}"#;
    assert_eq!(
        call(p.admin, "POST", "/upstream", Some(""), body).await.0,
        401
    );
    assert_eq!(call(p.admin, "GET", "/upstream", None, "").await.0, 401);
    assert!(!p.manifests().join("upstreamgate-eve.yaml").exists());
}

/// The API's manifest (JSON documents) with the UserUpstream allowed loopback.
fn allow_loopback(manifest: &str) -> String {
    let (head, user) = manifest.rsplit_once("---\n").expect("documents");
    let mut user: serde_json::Value = serde_json::from_str(user).expect("JSON document");
    user["spec"]["allowInternalNetworks"] = serde_json::json!(["127.0.0.0/8"]);
    format!("{head}---\n{user:#}\n")
}

//! `postern standalone` as a process: the example folder, edits, invalid
//! files and refused objects, observed through the admin API.

use std::path::Path;
use std::time::{Duration, Instant};

use postern_harness::{Manifests, PATIENCE, Postern, tmp_dir};
use serde_json::Value;

/// The folder is polled every 250 ms, so an edit takes well under a second
/// on an idle machine; the bound leaves room for a loaded one, and still
/// tells a watcher apart from a periodic resync.
const PROMPT: Duration = Duration::from_secs(10);

/// The version `compile` gives the folder, computed in-process.
fn expected_version(dir: &Path) -> String {
    let mut inputs = postern_compile::Inputs {
        services: Some(Default::default()),
        ..Default::default()
    };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).expect("read");
        for r in postern_compile::manifest::parse_documents(&text).expect("example parses") {
            inputs.push(r);
        }
    }
    let out = postern_compile::compile(&inputs);
    assert!(
        out.verdicts.iter().all(|v| v.accepted()),
        "{:?}",
        out.verdicts
    );
    out.snapshot.version
}

async fn start(dir: &Path) -> Postern {
    Postern::standalone(dir).start().await
}

fn version(view: &Value) -> Option<String> {
    view["version"].as_str().map(str::to_string)
}

#[tokio::test]
async fn serves_the_example_version_and_is_ready() {
    let dir = Manifests::example("example").path().to_path_buf();
    let want = expected_version(&dir);
    let p = start(&dir).await;
    let got = p.snapshot_until("a snapshot", PATIENCE, version).await;
    assert_eq!(got, want);
    assert_eq!(p.get("/readyz").await.0, 200);
    assert_eq!(p.get("/healthz").await.0, 200);

    let view = p.snapshot().await;
    assert_eq!(view["source"], "manifests");
    assert_eq!(view["lastError"], Value::Null);
    assert_eq!(view["rejected"], serde_json::json!([]));
    let s = &view["summary"];
    for (kind, n) in [
        ("proxyTargets", 1),
        ("routes", 1),
        ("userUpstreams", 1),
        ("oauthClients", 1),
    ] {
        assert_eq!(s[kind], n, "{kind} in {view:#}");
    }
    assert!(view["appliedAt"].as_str().is_some_and(|t| t.ends_with('Z')));

    // No secret material: not the password, nor its hash and salt.
    let (_, body) = p.get("/api/v1/snapshot").await;
    for secret in ["change-me-alice", "sha256", "salt", "password"] {
        assert!(!body.contains(secret), "{secret} leaked: {body}");
    }
    let (status, metrics) = p.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("version=\"{want}\"")),
        "{metrics}"
    );
    assert_eq!(p.get("/nope").await.0, 404);
}

#[tokio::test]
async fn an_edit_is_applied_within_a_second() {
    let dir = Manifests::example("edit").path().to_path_buf();
    let p = start(&dir).await;
    let v1 = p.snapshot_until("a snapshot", PATIENCE, version).await;

    let site = dir.join("site.yaml");
    let text = std::fs::read_to_string(&site).expect("read");
    std::fs::write(&site, text.replace("127.0.0.1:3000", "127.0.0.1:3999")).expect("write");
    let edited = Instant::now();
    let v2 = p
        .snapshot_until("the edited version", PROMPT, |v| {
            version(v).filter(|v| *v != v1)
        })
        .await;
    assert_eq!(v2, expected_version(&dir));
    assert!(edited.elapsed() < PROMPT);
}

#[tokio::test]
async fn an_invalid_file_keeps_the_last_good_snapshot_until_fixed() {
    let dir = Manifests::example("invalid").path().to_path_buf();
    let p = start(&dir).await;
    let v1 = p.snapshot_until("a snapshot", PATIENCE, version).await;

    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {name: r}\n",
    )
    .expect("write");
    let error = p
        .snapshot_until("lastError", PATIENCE, |v| {
            v["lastError"].is_object().then(|| v["lastError"].clone())
        })
        .await;
    assert_eq!(error["file"], "broken.yaml", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec")),
        "{error}"
    );
    let view = p.snapshot().await;
    assert_eq!(
        version(&view),
        Some(v1.clone()),
        "the last good snapshot serves"
    );
    assert_eq!(p.get("/readyz").await.0, 200);
    assert!(p.log().contains("broken.yaml"), "the log names the file");

    let fixed = "apiVersion: postern.io/v1alpha1\nkind: OAuthClient\nmetadata: {name: second}\n\
                 spec: {redirectUris: [\"https://app.example.com/cb\"], grantTypes: [authorization_code]}\n";
    std::fs::write(&broken, fixed).expect("write");
    let view = p
        .snapshot_until("lastError cleared", PATIENCE, |v| {
            v["lastError"].is_null().then(|| v.clone())
        })
        .await;
    assert_ne!(version(&view), Some(v1));
    assert_eq!(view["summary"]["oauthClients"], 2);
}

#[tokio::test]
async fn refused_objects_are_listed_with_their_reason() {
    let dir = Manifests::example("rejected").path().to_path_buf();
    std::fs::write(
        dir.join("orphan.yaml"),
        "apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {name: orphan, namespace: team}\n\
         spec: {targetRef: {name: missing}, match: {path: {type: Prefix, value: /x}}}\n",
    )
    .expect("write");
    let p = start(&dir).await;
    let rejected = p
        .snapshot_until("rejected objects", PATIENCE, |v| {
            v["rejected"].as_array().filter(|r| !r.is_empty()).cloned()
        })
        .await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = &rejected[0];
    assert_eq!(
        (&r["kind"], &r["namespace"], &r["name"]),
        (&"Route".into(), &"team".into(), &"orphan".into())
    );
    assert_eq!(r["reason"], "TargetNotFound");
    assert!(p.log().contains("object rejected"));
    // The rest of the folder still serves.
    assert_eq!(p.snapshot().await["summary"]["proxyTargets"], 1);
}

/// A ConfigMap volume: files are links into `..data`, itself a link to a
/// timestamped folder, and an update swaps `..data` atomically.
#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_applied() {
    use std::os::unix::fs::symlink;
    let example = Manifests::example("configmap-src").path().to_path_buf();
    let dir = tmp_dir("configmap");
    let names = ["oauth.yaml", "site.yaml", "users.yaml"];
    let gen1 = dir.join("..2025_01_01_00_00_00.1");
    std::fs::create_dir(&gen1).expect("mkdir");
    for name in names {
        std::fs::copy(example.join(name), gen1.join(name)).expect("copy");
        symlink(format!("..data/{name}"), dir.join(name)).expect("link file");
    }
    symlink("..2025_01_01_00_00_00.1", dir.join("..data")).expect("link data");
    let p = start(&dir).await;
    let v1 = p.snapshot_until("a snapshot", PATIENCE, version).await;
    assert_eq!(v1, expected_version(&example));

    let gen2 = dir.join("..2025_01_01_00_00_01.2");
    std::fs::create_dir(&gen2).expect("mkdir");
    for name in names {
        let text = std::fs::read_to_string(example.join(name)).expect("read");
        std::fs::write(
            gen2.join(name),
            text.replace("127.0.0.1:3000", "127.0.0.1:3998"),
        )
        .expect("write");
    }
    symlink("..2025_01_01_00_00_01.2", dir.join("..data_tmp")).expect("link tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    let v2 = p
        .snapshot_until("the swapped version", PATIENCE, |v| {
            version(v).filter(|v| *v != v1)
        })
        .await;
    assert_eq!(v2, expected_version(&gen2));
}

/// `n` small OAuthClient documents in one text.
fn many_clients(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: postern.io/v1alpha1\nkind: OAuthClient\nmetadata: {{name: {prefix}-{i}}}\n\
                 spec: {{redirectUris: [\"https://app.example.com/cb\"], grantTypes: [authorization_code]}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test]
async fn a_folder_over_its_bounds_is_refused_whole_and_costs_little() {
    let dir = Manifests::example("bounded").path().to_path_buf();
    let p = Postern::standalone(&dir)
        .args(["--manifests-max-bytes", "4000000"])
        .args(["--manifests-max-documents", "2000"])
        .start()
        .await;
    let v1 = p.snapshot_until("a snapshot", PATIENCE, version).await;
    let pid = p.pid();
    let rss_before = postern_harness::memory::rss_kib(pid).expect("rss");

    // 50 MB of small manifests, in 50 files: over the byte bound, refused
    // before a byte of it is parsed.
    let file = many_clients("flood", 6_000);
    assert!(file.len() > 1_000_000);
    let mut written = 0;
    for n in 0..50 {
        std::fs::write(dir.join(format!("flood-{n}.yaml")), &file).expect("write");
        written += file.len();
    }
    assert!(written > 50_000_000);
    let error = p
        .snapshot_until("lastError", PATIENCE, |v| {
            v["lastError"].is_object().then(|| v["lastError"].clone())
        })
        .await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("--manifests-max-bytes"), "{error}");
    assert_eq!(version(&p.snapshot().await), Some(v1.clone()));
    let peak = postern_harness::memory::peak_rss_kib(pid).expect("peak");
    assert!(
        peak < rss_before + 64 * 1024,
        "peak RSS {peak} KiB against {rss_before} KiB before the flood"
    );
    for n in 0..50 {
        std::fs::remove_file(dir.join(format!("flood-{n}.yaml"))).expect("remove");
    }
    p.snapshot_until("lastError cleared", PATIENCE, |v| {
        v["lastError"].is_null().then_some(())
    })
    .await;

    // Under the byte bound but over the document bound: refused too,
    // naming the flag, and the last good snapshot still serves.
    std::fs::write(dir.join("many.yaml"), many_clients("many", 2_500)).expect("write");
    let error = p
        .snapshot_until("lastError", PATIENCE, |v| {
            v["lastError"].is_object().then(|| v["lastError"].clone())
        })
        .await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("--manifests-max-documents")),
        "{error}"
    );
    assert_eq!(version(&p.snapshot().await), Some(v1));
    // Within both bounds: applied.
    std::fs::write(dir.join("many.yaml"), many_clients("many", 500)).expect("write");
    let view = p
        .snapshot_until("the bounded folder applied", PATIENCE, |v| {
            v["lastError"].is_null().then(|| v.clone())
        })
        .await;
    assert!(
        view["summary"]["oauthClients"]
            .as_u64()
            .is_some_and(|n| n > 500),
        "{view}"
    );
}

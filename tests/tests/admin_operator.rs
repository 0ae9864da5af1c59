//! The operator's admin API on the rig: its overview names every connected
//! data plane with the version it acked, its roles refuse as the data
//! plane's do, and its answers match the OpenAPI document
//! (`e2e/admin/openapi_check.py --component operator`).

use postern_harness::oauth::Tools;
use postern_harness::{
    HARNESS_READ_TOKEN, call, harness_read_token_file, repo_root, tmp_dir, wait_for,
};
use postern_tests::rig_or_skip;
use postern_tests::spine::{Spine, WAIT};
use serde_json::Value;

const ADMIN: &str = "operator-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_admin_api_shows_the_fleet_and_matches_its_document() {
    let token_file = tmp_dir("admin-operator").join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).expect("token file");
    let flag = format!("--admin-token-file={}", token_file.display());
    let spine = Spine::start_with_args(rig_or_skip!(), "adminop", &[flag]).await;
    let admin = spine.operator.admin;

    assert_eq!(
        call(admin, "GET", "/api/v1/overview", None, "").await.0,
        401
    );
    assert_eq!(
        call(admin, "GET", "/api/v1/overview", Some("nope"), "")
            .await
            .0,
        401
    );
    assert_eq!(call(admin, "GET", "/healthz", None, "").await.0, 200);
    // The data plane's endpoints are not the operator's.
    assert_eq!(
        call(admin, "GET", "/api/v1/users", Some(ADMIN), "").await.0,
        404
    );

    let overview = wait_for(
        "the data plane in the operator's overview",
        WAIT,
        || async {
            let (status, body) = call(
                admin,
                "GET",
                "/api/v1/overview",
                Some(HARNESS_READ_TOKEN),
                "",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("json");
            let acked = v["dataPlanes"][0]["ackedVersion"]
                .as_str()
                .map(str::to_string);
            (acked.is_some() && acked == v["snapshot"]["version"].as_str().map(str::to_string))
                .then_some(v)
        },
    )
    .await;
    assert_eq!(overview["component"], "operator");
    assert_eq!(
        overview["dataPlanes"].as_array().map(Vec::len),
        Some(1),
        "{overview}"
    );

    if let Some(tools) = Tools::find(&[]) {
        let args = [
            format!("--url=http://{admin}"),
            "--component=operator".into(),
            format!("--admin-token-file={}", token_file.display()),
            format!("--read-token-file={}", harness_read_token_file().display()),
        ];
        let script = repo_root().join("e2e/admin/openapi_check.py");
        tools
            .run_file(&script, &args, 180)
            .await
            .expect_ok("openapi check");
    }
}

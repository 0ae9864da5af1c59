//! The data plane must never link kube or k8s-openapi, not even transitively.

use std::process::Command;

#[test]
fn dataplane_dependency_tree_has_no_kube() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "postern",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tree.contains("postern-snapshot"),
        "unexpected tree:\n{tree}"
    );
    let banned: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("kube") || l.starts_with("k8s-openapi"))
        .collect();
    assert!(banned.is_empty(), "kube in the data plane: {banned:?}");
}

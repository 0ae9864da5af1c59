//! The committed CRD YAML must be what the Rust types generate.

use std::path::Path;

#[test]
fn committed_yaml_matches_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["crds/yaml", "charts/postern/crds"] {
        for crd in postern_crds::crds() {
            let path = root.join(dir).join(postern_crds::crd_file_name(&crd));
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let generated = postern_crds::crd_yaml(&crd).expect("serialise CRD");
            assert!(
                committed == generated,
                "{} is stale: run `cargo run -p postern-crds --bin crdgen`",
                path.display()
            );
        }
    }
}

#[test]
fn every_kind_has_status_and_printer_columns() {
    for crd in postern_crds::crds() {
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns = version
            .additional_printer_columns
            .as_ref()
            .expect("columns");
        assert!(
            columns.iter().any(|c| c.name == "Accepted"),
            "{:?}",
            crd.metadata.name
        );
    }
}

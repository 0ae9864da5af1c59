//! Writes the CRD YAML into `crds/yaml/` and `charts/postern/crds/`.
//!
//! `cargo run -p postern-crds --bin crdgen` from the repository root; with
//! `--check` it writes nothing and fails when a committed file differs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs: [PathBuf; 2] = [root.join("crds/yaml"), root.join("charts/postern/crds")];
    let mut stale = Vec::new();
    for crd in postern_crds::crds() {
        let yaml = match postern_crds::crd_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(e) => {
                eprintln!("cannot serialise a CRD: {e}");
                return ExitCode::FAILURE;
            }
        };
        for dir in &dirs {
            let path = dir.join(postern_crds::crd_file_name(&crd));
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == yaml {
                continue;
            }
            if check {
                stale.push(path);
            } else if let Err(e) =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &yaml))
            {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        for path in stale {
            eprintln!(
                "stale: {} (run `cargo run -p postern-crds --bin crdgen`)",
                path.display()
            );
        }
        ExitCode::FAILURE
    }
}

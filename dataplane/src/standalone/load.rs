//! Reading a manifests folder and compiling it: which files count, how a
//! change is noticed, and which file is at fault when one is invalid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use postern_compile::{Inputs, Output, manifest};
use sha2::{Digest, Sha256};

/// One manifest file's name and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub text: String,
}

/// A manifest file that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FileError {
    pub file: String,
    pub message: String,
}

/// How much of a folder is read at all: a folder beyond either bound is
/// refused whole (the last good snapshot keeps serving) before its files
/// are read or parsed, so a hostile or runaway folder costs little memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of the manifest files.
    pub max_bytes: u64,
    /// YAML documents across the files.
    pub max_documents: usize,
}

impl Limits {
    /// No bounds (for checks on a folder the watcher already bounds).
    pub const NONE: Limits = Limits {
        max_bytes: u64::MAX,
        max_documents: usize::MAX,
    };
}

/// Cheap evidence of change: name, modification time and length of each
/// file (symlinks followed, so a ConfigMap's `..data` swap shows).
pub type Stamp = Vec<(String, Option<SystemTime>, u64)>;

/// The manifest files of `dir`, sorted by name: `*.yaml` and `*.yml`
/// regular files (or links to them), not hidden, not in subfolders.
pub fn list(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let wanted = !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"));
        // A dangling link or a file removed since read_dir is not a manifest.
        if wanted && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

pub fn stamp(dir: &Path) -> std::io::Result<Stamp> {
    Ok(list(dir)?
        .into_iter()
        .map(|(name, path)| {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            (name, modified, meta.map_or(0, |m| m.len()))
        })
        .collect())
}

/// Reads every manifest file, refusing a folder larger than `limits`
/// allows before reading it. A file that vanished in between is skipped;
/// one that cannot be read or is not UTF-8 is an error naming it.
pub fn read(dir: &Path, limits: Limits) -> Result<Vec<ManifestFile>, FileError> {
    let folder_error = |message: String| FileError {
        file: dir.display().to_string(),
        message,
    };
    let files = list(dir).map_err(|e| folder_error(e.to_string()))?;
    let total: u64 = files
        .iter()
        .map(|(_, path)| std::fs::metadata(path).map_or(0, |m| m.len()))
        .sum();
    if total > limits.max_bytes {
        return Err(folder_error(format!(
            "{total} bytes of manifests in {} files is over the limit of {} (--manifests-max-bytes)",
            files.len(),
            limits.max_bytes
        )));
    }
    let mut out = Vec::with_capacity(files.len());
    let mut read_bytes = 0u64;
    for (name, path) in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                // A file that grew since it was measured counts as it is now.
                read_bytes += text.len() as u64;
                if read_bytes > limits.max_bytes {
                    return Err(folder_error(format!(
                        "the manifests grew over the limit of {} bytes while being read (--manifests-max-bytes)",
                        limits.max_bytes
                    )));
                }
                out.push(ManifestFile { name, text })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(FileError {
                    file: name,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A hash of names and contents: equal hashes, same configuration.
pub fn content_hash(files: &[ManifestFile]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        for part in [f.name.as_bytes(), f.text.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    h.finalize().into()
}

/// Parses every file and compiles them together; see [`inputs`].
pub fn compile(files: &[ManifestFile], limits: Limits) -> Result<Output, FileError> {
    Ok(postern_compile::compile(&inputs(files, limits)?))
}

/// Parses every file into compilation input, refusing more YAML documents
/// than `limits` allows (counted cheaply before each file is parsed, then
/// exactly). Standalone has no cluster, so the Services known are exactly
/// those in the manifests (none is an empty map, and a Service backend
/// without its Service is refused).
pub fn inputs(files: &[ManifestFile], limits: Limits) -> Result<Inputs, FileError> {
    let mut inputs = Inputs {
        services: Some(BTreeMap::new()),
        ..Inputs::default()
    };
    let mut documents = 0usize;
    let too_many = |file: &str| FileError {
        file: file.to_string(),
        message: format!(
            "more than {} YAML documents in the folder (--manifests-max-documents)",
            limits.max_documents
        ),
    };
    for file in files {
        if documents.saturating_add(separators(&file.text)) > limits.max_documents {
            return Err(too_many(&file.name));
        }
        let resources = manifest::parse_documents(&file.text).map_err(|e| FileError {
            file: file.name.clone(),
            message: e.to_string(),
        })?;
        documents += resources.len();
        if documents > limits.max_documents {
            return Err(too_many(&file.name));
        }
        for resource in resources {
            inputs.push(resource);
        }
    }
    Ok(inputs)
}

/// The document separators of a YAML text, a lower bound of its documents
/// less one, found without parsing.
fn separators(text: &str) -> usize {
    text.lines()
        .filter(|line| {
            line.strip_prefix("---")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> ManifestFile {
        ManifestFile {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_invalid_file_is_named() {
        let files = [
            file(
                "a.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n",
            ),
            file("b.yaml", "apiVersion: postern.io/v1alpha1\nkind: Route\n"),
        ];
        let err = compile(&files, Limits::NONE).expect_err("b is invalid");
        assert_eq!(err.file, "b.yaml");
    }

    #[test]
    fn hash_separates_names_from_contents() {
        let a = content_hash(&[file("ab", "c")]);
        let b = content_hash(&[file("a", "bc")]);
        assert_ne!(a, b);
        assert_eq!(a, content_hash(&[file("ab", "c")]));
    }

    #[test]
    fn lists_only_visible_yaml_files_sorted() {
        let dir = std::env::temp_dir().join(format!("postern-list-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.yaml")).expect("mkdir");
        for name in [
            "b.yml",
            "a.yaml",
            ".hidden.yaml",
            "notes.txt",
            "sub.yaml/x.yaml",
        ] {
            std::fs::write(dir.join(name), "").expect("write");
        }
        let names: Vec<_> = list(&dir)
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(names, ["a.yaml", "b.yml"]);
    }
}

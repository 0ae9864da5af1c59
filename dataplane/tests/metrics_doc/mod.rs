//! `docs/metrics.md` read as data, and the checks of a `/metrics` text
//! against it. Std only: the operator's test compiles this same file (by
//! `#[path]`), so the two components are held to one reading of the page.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One documented family: its `# TYPE` and its label names.
#[derive(Debug)]
pub struct Family {
    pub kind: String,
    pub labels: Vec<String>,
}

/// Where a label's values come from (the page's rule on bounded labels).
#[derive(Debug)]
pub enum Values {
    /// A closed list of words from the code.
    Fixed(BTreeSet<String>),
    /// Names of configured objects (the text says which).
    Configured(String),
    /// Computed from the snapshot in service.
    Derived(String),
}

#[derive(Debug, Default)]
pub struct MetricsDoc {
    pub families: BTreeMap<String, Family>,
    pub values: BTreeMap<(String, String), Values>,
}

/// The cells of a Markdown table row, or `None` for other lines.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// Every `` `word` `` in a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

impl MetricsDoc {
    /// Panics unless the families documented for one component (those
    /// `component` says are its own) are exactly `registered`.
    pub fn assert_lists(&self, registered: &BTreeSet<String>, component: impl Fn(&str) -> bool) {
        let documented: BTreeSet<String> = self
            .families
            .keys()
            .filter(|n| component(n))
            .cloned()
            .collect();
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(registered).collect();
        assert!(
            undocumented.is_empty(),
            "registered but not in docs/metrics.md: {undocumented:?}"
        );
        assert!(
            stale.is_empty(),
            "in docs/metrics.md but registered nowhere: {stale:?}"
        );
    }

    /// `docs/metrics.md` of this checkout.
    pub fn load() -> MetricsDoc {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        MetricsDoc::parse(&text)
    }

    pub fn parse(text: &str) -> MetricsDoc {
        let mut doc = MetricsDoc::default();
        for row in text.lines().filter_map(cells) {
            match row.as_slice() {
                [name, kind, labels, _meaning]
                    if matches!(*kind, "counter" | "gauge" | "histogram") =>
                {
                    let name = ticked(name).concat();
                    let family = Family {
                        kind: kind.to_string(),
                        labels: ticked(labels),
                    };
                    assert!(
                        doc.families.insert(name.clone(), family).is_none(),
                        "{name} is documented twice"
                    );
                }
                [family, label, values] if family.starts_with("`postern_") => {
                    let key = (ticked(family).concat(), ticked(label).concat());
                    let values = if let Some(list) = values.strip_prefix("fixed:") {
                        Values::Fixed(ticked(list).into_iter().collect())
                    } else if let Some(what) = values.strip_prefix("configured:") {
                        Values::Configured(what.trim().to_string())
                    } else if let Some(what) = values.strip_prefix("derived:") {
                        Values::Derived(what.trim().to_string())
                    } else {
                        panic!("{key:?}: values must start with fixed:, configured: or derived:")
                    };
                    assert!(
                        doc.values.insert(key.clone(), values).is_none(),
                        "{key:?} is documented twice"
                    );
                }
                _ => {}
            }
        }
        doc
    }

    /// The page's own consistency: every label of a family has a values
    /// row, and every values row belongs to a documented label.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, family) in &self.families {
            for label in &family.labels {
                if !self.values.contains_key(&(name.clone(), label.clone())) {
                    out.push(format!("{name}{{{label}}} has no row under Label values"));
                }
            }
        }
        for (family, label) in self.values.keys() {
            let known = self
                .families
                .get(family)
                .is_some_and(|f| f.labels.contains(label));
            if !known {
                out.push(format!(
                    "Label values lists {family}{{{label}}}, which is not a documented label"
                ));
            }
        }
        out
    }
}

/// One sample line of an exposition.
#[derive(Debug)]
pub struct Sample {
    pub family: String,
    pub labels: Vec<(String, String)>,
}

/// A `/metrics` text: each family's `# TYPE`, and every sample.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                out.types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let sample = parse_sample(line);
                let family = out.family_of(&sample.family);
                out.samples.push(Sample { family, ..sample });
            }
        }
        out
    }

    /// The family a sample name belongs to (`x_total` → `x`, `x_bucket` → `x`).
    fn family_of(&self, sample: &str) -> String {
        if self.types.contains_key(sample) {
            return sample.to_string();
        }
        for suffix in ["_total", "_bucket", "_sum", "_count", "_created", "_info"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && self.types.contains_key(base)
            {
                return base.to_string();
            }
        }
        sample.to_string()
    }
}

/// `name{a="x",b="y"} 1` → the name and the label pairs (values unescaped).
fn parse_sample(line: &str) -> Sample {
    let Some((name, rest)) = line.split_once('{') else {
        let name = line.split(' ').next().unwrap_or(line);
        return Sample {
            family: name.to_string(),
            labels: Vec::new(),
        };
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(match chars.next() {
                    Some('n') => '\n',
                    Some(other) => other,
                    None => break,
                }),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    Sample {
        family: name.to_string(),
        labels,
    }
}

/// What a scrape shows that the page does not allow. `configured` says
/// whether a value of a `configured:` label names a configured object;
/// `derived` the same for `derived:` labels.
pub fn check_exposition(
    doc: &MetricsDoc,
    text: &str,
    configured: &dyn Fn(&str, &str, &str) -> bool,
    derived: &dyn Fn(&str, &str, &str) -> bool,
) -> Vec<String> {
    let exposition = Exposition::parse(text);
    let mut out = Vec::new();
    for (name, kind) in &exposition.types {
        match doc.families.get(name) {
            None => out.push(format!(
                "{name} ({kind}) is exported but not in docs/metrics.md"
            )),
            Some(f) if &f.kind != kind => out.push(format!(
                "{name} is a {kind}, docs/metrics.md says {}",
                f.kind
            )),
            Some(_) => {}
        }
    }
    for sample in &exposition.samples {
        let Some(family) = doc.families.get(&sample.family) else {
            continue;
        };
        for (label, value) in &sample.labels {
            if label == "le" && family.kind == "histogram" {
                continue;
            }
            let key = (sample.family.clone(), label.clone());
            let ok = match doc.values.get(&key) {
                None => {
                    out.push(format!("{}{{{label}}} is not documented", sample.family));
                    continue;
                }
                Some(Values::Fixed(set)) => set.contains(value),
                Some(Values::Configured(_)) => configured(&sample.family, label, value),
                Some(Values::Derived(_)) => derived(&sample.family, label, value),
            };
            if !ok {
                out.push(format!(
                    "{}{{{label}=\"{value}\"}}: a value docs/metrics.md does not allow",
                    sample.family
                ));
            }
        }
    }
    out
}

/// The family names a `prometheus-client` `Registry`'s `Debug` text
/// registers, empty families included (a scrape shows a labelled family
/// only once it has a series). Each is the registry's prefix, the name and
/// the unit, as the text encoder writes them.
pub fn registry_families(debug: &str) -> Vec<String> {
    let mut out = Vec::new();
    // (brace depth where a Registry opened, its prefix)
    let mut registries: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_name: Option<String> = None;
    let bytes = debug.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &debug[i..];
        if rest.starts_with('"') {
            // Skip a string literal (Debug escapes quotes inside it).
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            continue;
        }
        if rest.starts_with("Registry {") {
            registries.push((depth + 1, String::new()));
        } else if let Some(p) = rest.strip_prefix("prefix: Some(Prefix(\"") {
            let prefix = p.split('"').next().unwrap_or_default();
            if let Some(top) = registries.last_mut() {
                top.1 = prefix.to_string();
            }
        } else if let Some(n) = rest.strip_prefix("Descriptor { name: \"") {
            pending_name = n.split('"').next().map(str::to_string);
        } else if let Some(u) = rest.strip_prefix("unit: ")
            && let Some(name) = pending_name.take()
        {
            let prefix = registries.last().map(|r| r.1.as_str()).unwrap_or("");
            let mut full = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}_{name}")
            };
            if let Some(unit) = u.strip_prefix("Some(") {
                let unit = unit.split(')').next().unwrap_or_default();
                full = format!("{full}_{}", unit.to_lowercase());
            }
            out.push(full);
        }
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                if registries.last().is_some_and(|r| r.0 == depth) {
                    registries.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    out
}

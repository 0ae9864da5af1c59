//! `kubectl explain` shows a field's `description`, which comes from the
//! field's doc comment in `postern-api`: every field of every CRD needs one,
//! or users of `kubectl explain` (and of editors reading the schema) meet a
//! bare name. A hole is fixed with a `///` comment at the field's source.

use serde_json::Value;

/// The paths of fields in `schema` (below `path`) without a description.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, field) in props {
            let here = format!("{path}.{name}");
            let described = field
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                out.push(here.clone());
            }
            undescribed(field, &here, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undescribed(values, &format!("{path}{{}}"), out);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        let branches = schema.get(key).and_then(Value::as_array);
        for (i, branch) in branches.into_iter().flatten().enumerate() {
            undescribed(branch, &format!("{path}<{key}[{i}]>"), out);
        }
    }
}

#[test]
fn every_field_of_every_crd_has_a_description() {
    let mut holes = Vec::new();
    let mut fields = 0;
    for crd in postern_crds::crds() {
        let kind = crd.spec.names.kind.clone();
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap_or_else(|| panic!("{kind} {} has no schema", version.name));
            let schema = serde_json::to_value(schema).expect("a schema is JSON");
            fields += count_fields(&schema);
            undescribed(&schema, &format!("{kind}/{}", version.name), &mut holes);
        }
    }
    // The kinds have dozens of fields each; a walk that finds none is broken.
    assert!(
        fields > 100,
        "only {fields} fields found: the walk is wrong"
    );
    assert!(
        holes.is_empty(),
        "fields without a description (add a /// doc comment in postern-api, then run `cargo run -p postern-crds --bin crdgen`):\n  {}",
        holes.join("\n  ")
    );
}

fn count_fields(schema: &Value) -> usize {
    let mut holes = Vec::new();
    let blank = strip_descriptions(schema);
    undescribed(&blank, "", &mut holes);
    holes.len()
}

fn strip_descriptions(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "description")
                .map(|(k, v)| (k.clone(), strip_descriptions(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_descriptions).collect()),
        other => other.clone(),
    }
}

#[test]
fn the_walk_finds_nested_holes() {
    let schema = serde_json::json!({
        "properties": {
            "spec": {
                "description": "described",
                "properties": {
                    "list": {"description": "d", "items": {"properties": {"bare": {}}}},
                    "map": {"description": "d", "additionalProperties": {"properties": {"x": {}}}},
                    "either": {"description": "d", "anyOf": [{"properties": {"y": {"description": "d"}, "z": {}}}]},
                    "blank": {"description": "  "}
                }
            }
        }
    });
    let mut holes = Vec::new();
    undescribed(&schema, "K", &mut holes);
    holes.sort();
    assert_eq!(
        holes,
        [
            "K.spec.blank",
            "K.spec.either<anyOf[0]>.z",
            "K.spec.list[].bare",
            "K.spec.map{}.x"
        ]
    );
}

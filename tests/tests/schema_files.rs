//! The event schemas under `schemas/` as files: each a valid, self-contained
//! JSON Schema (draft 2020-12) whose `$id` and constants match its path,
//! accepting its valid examples and refusing its invalid ones
//! (`schemas/examples/`, plus mechanical variants: an extra property, each
//! required field left out); and every published version compatible with
//! what it was when first committed: no field removed, retyped or made
//! required (a change of that kind needs a new version, a new file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const ID_BASE: &str = "https://lis.example/schemas/";
const STREAM_TYPES: [&str; 7] = [
    "patient", "account", "partner", "client", "location", "order", "catalog",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every schema file, as `<streamType>/<EventType>.v<N>.json`.
fn schema_files() -> Vec<String> {
    let mut out = Vec::new();
    for stream in STREAM_TYPES {
        let Ok(dir) = std::fs::read_dir(root().join("schemas").join(stream)) else {
            continue;
        };
        for entry in dir {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            if name.ends_with(".json") {
                out.push(format!("{stream}/{name}"));
            }
        }
    }
    out.sort();
    out
}

/// `EventType` and `N` of `EventType.vN.json`.
fn parse_name(file: &str) -> Option<(String, i64)> {
    let stem = file.strip_suffix(".json")?;
    let (ty, v) = stem.rsplit_once(".v")?;
    let ok = ty.chars().next()?.is_ascii_uppercase() && ty.chars().all(|c| c.is_ascii_alphabetic());
    ok.then_some((ty.to_string(), v.parse().ok().filter(|v| *v >= 1)?))
}

/// Every `$ref` that points outside its document.
fn outside_refs(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(m) => {
            for (k, v) in m {
                if (k == "$ref" || k == "$dynamicRef")
                    && !v.as_str().is_some_and(|s| s.starts_with('#'))
                {
                    out.push(v.to_string());
                } else {
                    outside_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| outside_refs(v, out)),
        _ => {}
    }
}

/// A copy of `v` with the member at the dotted `path` set, or removed.
fn changed(v: &Value, path: &str, value: Option<Value>) -> Value {
    let mut out = v.clone();
    let parts: Vec<&str> = path.split('.').collect();
    let mut node = &mut out;
    for p in &parts[..parts.len() - 1] {
        node = &mut node[*p];
    }
    let last = parts[parts.len() - 1];
    match value {
        Some(x) => {
            node[last] = x;
        }
        None => {
            node.as_object_mut().unwrap().remove(last);
        }
    }
    out
}

#[test]
fn every_schema_file_is_valid_self_contained_and_checks_its_examples() {
    let files = schema_files();
    assert!(files.len() >= 20, "{files:?}");
    let mut failures = Vec::new();
    for rel in &files {
        let (stream, file) = rel.split_once('/').unwrap();
        let Some((ty, version)) = parse_name(file) else {
            failures.push(format!("{rel}: not <EventType>.v<N>.json"));
            continue;
        };
        let text = std::fs::read_to_string(root().join("schemas").join(rel)).unwrap();
        let schema: Value = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{rel}: not JSON: {e}"));
                continue;
            }
        };
        if let Err(e) = jsonschema::meta::validate(&schema) {
            failures.push(format!("{rel}: not a valid schema: {e}"));
            continue;
        }
        if schema["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
            failures.push(format!("{rel}: $schema is not draft 2020-12"));
        }
        if schema["$id"] != format!("{ID_BASE}{rel}") {
            failures.push(format!("{rel}: $id does not match the path"));
        }
        for key in ["title", "description"] {
            if schema[key].as_str().is_none_or(|s| s.is_empty()) {
                failures.push(format!("{rel}: no {key}"));
            }
        }
        let mut refs = Vec::new();
        outside_refs(&schema, &mut refs);
        if !refs.is_empty() {
            failures.push(format!("{rel}: references outside the file: {refs:?}"));
        }
        for (key, want) in [
            ("type", json!(ty)),
            ("schemaVersion", json!(version)),
            ("streamType", json!(stream)),
        ] {
            if schema["properties"][key]["const"] != want {
                failures.push(format!("{rel}: properties.{key} is not const {want}"));
            }
        }
        if schema["additionalProperties"] != json!(false) {
            failures.push(format!("{rel}: the envelope allows additional properties"));
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let examples: Value =
            match std::fs::read_to_string(root().join("schemas/examples").join(rel)) {
                Ok(t) => serde_json::from_str(&t).unwrap(),
                Err(_) => {
                    failures.push(format!("{rel}: no examples in schemas/examples/{rel}"));
                    continue;
                }
            };
        let valid = examples["valid"].as_array().cloned().unwrap_or_default();
        let mut invalid: Vec<(String, Value)> = examples["invalid"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e["label"].as_str().unwrap().to_string(), e["event"].clone()))
            .collect();
        if valid.is_empty() || invalid.is_empty() {
            failures.push(format!(
                "{rel}: needs valid and hand-written invalid examples"
            ));
        }
        for (i, example) in valid.iter().enumerate() {
            for e in validator.iter_errors(example) {
                failures.push(format!(
                    "{rel}: valid example #{i} refused at {}: {e}",
                    e.instance_path
                ));
            }
            invalid.push((
                "extra envelope property".into(),
                changed(example, "unexpected", Some(json!(true))),
            ));
            invalid.push((
                "extra data property".into(),
                changed(example, "data.unexpected", Some(json!(true))),
            ));
            for field in schema["required"].as_array().unwrap() {
                let f = field.as_str().unwrap();
                invalid.push((format!("missing {f}"), changed(example, f, None)));
            }
            for field in schema["properties"]["data"]["required"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let f = field.as_str().unwrap();
                if example["data"].get(f).is_some() {
                    invalid.push((
                        format!("missing data.{f}"),
                        changed(example, &format!("data.{f}"), None),
                    ));
                }
            }
        }
        for (label, example) in &invalid {
            if validator.is_valid(example) {
                failures.push(format!("{rel}: invalid example accepted: {label}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a consumer of the `old` schema would find broken in `new`: a
/// property removed, a type, format, pattern, constant or set of values
/// changed, a property made required. Paths are JSON pointers into the
/// instance (`/data/firstName`).
fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    compare(old, new, old, new, "", &mut out);
    out
}

fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        Some(pointer) => root.pointer(pointer).map_or(node, |n| resolve(n, root)),
        None => node,
    }
}

fn compare(
    old: &Value,
    new: &Value,
    old_root: &Value,
    new_root: &Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let (old, new) = (resolve(old, old_root), resolve(new, new_root));
    let at = if path.is_empty() { "/" } else { path };
    for key in ["type", "format", "pattern", "const", "enum"] {
        if old.get(key) != new.get(key) && (old.get(key).is_some() || key != "format") {
            out.push(format!("{at}: `{key}` changed"));
        }
    }
    let required = |n: &Value| -> BTreeSet<String> {
        n["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    for name in required(new).difference(&required(old)) {
        out.push(format!("{path}/{name}: made required"));
    }
    if let Some(props) = old.get("properties").and_then(Value::as_object) {
        for (name, o) in props {
            match new["properties"].get(name) {
                None => out.push(format!("{path}/{name}: removed")),
                Some(n) => compare(o, n, old_root, new_root, &format!("{path}/{name}"), out),
            }
        }
    }
    if let (Some(o), Some(n)) = (old.get("items"), new.get("items")) {
        compare(o, n, old_root, new_root, &format!("{path}/*"), out);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        match (
            old.get(key).and_then(Value::as_array),
            new.get(key).and_then(Value::as_array),
        ) {
            (Some(o), Some(n)) if o.len() == n.len() => {
                for (i, (o, n)) in o.iter().zip(n).enumerate() {
                    compare(o, n, old_root, new_root, &format!("{path}({key} {i})"), out);
                }
            }
            (None, None) => {}
            _ => out.push(format!("{at}: `{key}` changed")),
        }
    }
}

#[test]
fn the_compatibility_check_finds_what_breaks_a_consumer_and_allows_the_rest() {
    let old = json!({"type": "object", "required": ["a"], "$defs": {"id": {"type": "string", "format": "uuid"}},
        "properties": {"a": {"$ref": "#/$defs/id"}, "b": {"type": "integer"},
                       "c": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}}}});
    assert_eq!(breaking_changes(&old, &old), Vec::<String>::new());
    let added_optional = changed(&old, "properties.d", Some(json!({"type": "string"})));
    assert_eq!(
        breaking_changes(&old, &added_optional),
        Vec::<String>::new()
    );
    let removed = changed(&old, "properties.b", None);
    assert_eq!(breaking_changes(&old, &removed), ["/b: removed"]);
    let retyped = changed(&old, "properties.b", Some(json!({"type": "string"})));
    assert_eq!(breaking_changes(&old, &retyped), ["/b: `type` changed"]);
    let required = changed(&old, "required", Some(json!(["a", "b"])));
    assert_eq!(breaking_changes(&old, &required), ["/b: made required"]);
    let through_ref = changed(&old, "$defs.id", Some(json!({"type": "integer"})));
    assert_eq!(
        breaking_changes(&old, &through_ref),
        ["/a: `type` changed", "/a: `format` changed"]
    );
    let narrowed = changed(&old, "properties.c.items.enum", Some(json!(["x"])));
    assert_eq!(breaking_changes(&old, &narrowed), ["/c/*: `enum` changed"]);
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Every committed version of every schema file against the file as it is
/// now: a consumer built on any of them must still read what is written.
#[test]
fn published_schema_versions_stay_compatible() {
    assert!(
        git(&["rev-parse", "--git-dir"]).is_some(),
        "the compatibility check reads the schemas' history: run it in a git checkout"
    );
    if git(&["rev-parse", "--is-shallow-repository"])
        .as_deref()
        .map(str::trim)
        != Some("false")
    {
        // A shallow clone holds no earlier versions to compare with: say so
        // loudly rather than pass as if they had been checked.
        eprintln!(
            "WARNING: a shallow clone: the schemas' compatibility with their history is NOT checked \
             (clone with the whole history to check it)"
        );
        return;
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for rel in schema_files() {
        let path = format!("schemas/{rel}");
        let now: Value =
            serde_json::from_str(&std::fs::read_to_string(root().join(&path)).unwrap()).unwrap();
        let commits = git(&["log", "--format=%H", "--", &path]).unwrap_or_default();
        for commit in commits.lines() {
            let Some(text) = git(&["show", &format!("{commit}:{path}")]) else {
                continue;
            };
            let Ok(then) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            compared += 1;
            for b in breaking_changes(&then, &now) {
                failures.push(format!(
                    "{rel}: {b} since {} (make a new version, {}, instead)",
                    &commit[..10],
                    "a new file <EventType>.v<N+1>.json"
                ));
            }
        }
    }
    assert!(
        compared >= 20,
        "only {compared} committed schema versions found"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! The OpenAPI document as it is served: what utoipa derives from the handlers' annotations and
//! types, finished once here for every operation — so a route added anywhere under
//! `src/admin` is documented the same way without touching this file:
//!
//! - every operation lists the errors the extractors and the error type can answer with
//!   (`application/problem+json`, the `Problem` schema): 400, 404, 422 and 500 everywhere, 401
//!   and 403 where a token is needed, 408, 413 and 415 where there is a body; a handler declares
//!   only its own extras (409 ...), and those are moved to `application/problem+json` too;
//! - path parameters carry the schema (and pattern) of the identifier they name;
//! - query parameters are never `null` (a query string has no null: an absent one is omitted);
//! - a body declared as `application/merge-patch+json` of a resource becomes a merge-patch
//!   document of it (RFC 7396: every member optional, `null` clears an optional one, unknown
//!   members still refused), accepted as `application/json` too;
//! - `allOf` over objects (`#[serde(flatten)]`) is flattened into one object, so a closed
//!   member (`additionalProperties: false`) does not make the whole unmatchable.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// Path parameters by the collection they follow: `/groups/{group}` is a `GroupId`.
const PATH_IDS: &[(&str, &str, &str)] = &[
    ("groups", "group", "GroupId"),
    ("devices", "mac", "Mac"),
    ("users", "ext", "Extension"),
    ("shared-lines", "number", "SharedNumber"),
    ("shared-call-appearances", "line_port", "LinePort"),
    ("key-profiles", "name", "ProfileName"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

const PROBLEM: &str = "application/problem+json";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// Finishes the derived document (see the module docs).
pub(crate) fn finish(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    flatten_all_of(&mut v);
    unsigned(&mut v);
    let schemas = v["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut patches: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(paths) = v["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                path_params(path, op);
                query_params(op);
                optional_body(op);
                merge_patch_body(op, &schemas, &mut patches);
                error_responses(op);
            }
        }
    }
    if let Some(s) = v["components"]["schemas"].as_object_mut() {
        s.extend(patches);
    }
    v
}

/// `{group}` after `/groups` is a `GroupId`, and so on.
fn path_params(path: &str, op: &mut Value) {
    let segments: Vec<&str> = path.split('/').collect();
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut().filter(|p| p["in"] == "path") {
        let Some(name) = p["name"].as_str() else {
            continue;
        };
        let placeholder = format!("{{{name}}}");
        let Some(at) = segments.iter().position(|s| *s == placeholder) else {
            continue;
        };
        let before = at.checked_sub(1).map(|i| segments[i]).unwrap_or("");
        if let Some((_, _, schema)) = PATH_IDS
            .iter()
            .find(|(coll, param, _)| *coll == before && *param == name)
        {
            p["schema"] = json!({"$ref": format!("#/components/schemas/{schema}")});
        }
    }
}

/// A query string cannot say `null`: an optional parameter is one that may be left out.
fn query_params(op: &mut Value) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut().filter(|p| p["in"] == "query") {
        let schema = &mut p["schema"];
        if let Some(types) = schema["type"].as_array() {
            let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            schema["type"] = match rest.as_slice() {
                [one] => one.clone(),
                _ => Value::Array(rest),
            };
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(members) = schema[key].as_array() {
                let rest: Vec<Value> = members
                    .iter()
                    .filter(|m| m.get("type") != Some(&json!("null")))
                    .cloned()
                    .collect();
                if let [one] = rest.as_slice() {
                    *schema = one.clone();
                }
            }
        }
    }
}

/// An optional body (`request_body = Option<X>`) is one that may be left out, not a JSON
/// `null`: its schema is `X`.
fn optional_body(op: &mut Value) {
    let Some(body) = op.get_mut("requestBody") else {
        return;
    };
    if body.get("required") == Some(&json!(true)) {
        return;
    }
    let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    for media in content.values_mut() {
        let schema = &mut media["schema"];
        if let Some(members) = schema["oneOf"].as_array() {
            let rest: Vec<Value> = members
                .iter()
                .filter(|m| m.get("type") != Some(&json!("null")))
                .cloned()
                .collect();
            if let [one] = rest.as_slice() {
                *schema = one.clone();
            }
        }
    }
}

/// A merge-patch body of `X` becomes a `XPatch` document, accepted as JSON too.
fn merge_patch_body(
    op: &mut Value,
    schemas: &Map<String, Value>,
    patches: &mut BTreeMap<String, Value>,
) {
    let Some(content) = op.get_mut("requestBody").and_then(|b| b.get_mut("content")) else {
        return;
    };
    let Some(declared) = content.get(MERGE_PATCH).and_then(|c| c.get("schema")) else {
        return;
    };
    let patch = patch_of(declared, schemas, patches);
    let media = json!({"schema": patch});
    content[MERGE_PATCH] = media.clone();
    content["application/json"] = media;
}

/// The merge-patch form of a schema (see the module docs).
fn patch_of(
    s: &Value,
    schemas: &Map<String, Value>,
    patches: &mut BTreeMap<String, Value>,
) -> Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let Some(target) = schemas.get(name) else {
            return s.clone();
        };
        if target.get("properties").is_none() && target.get("additionalProperties").is_none() {
            return s.clone();
        }
        let patch_name = format!("{name}Patch");
        if !patches.contains_key(&patch_name) {
            // Reserve the name first: a recursive type refers to its own patch.
            patches.insert(patch_name.clone(), Value::Null);
            let mut p = patch_of(target, schemas, patches);
            p["description"] = json!(format!(
                "A JSON merge patch (RFC 7396) of {name}: members left out stay as they are, \
                 null clears an optional one."
            ));
            patches.insert(patch_name.clone(), p);
        }
        return json!({"$ref": format!("#/components/schemas/{patch_name}")});
    }
    let mut out = s.clone();
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let required: BTreeSet<&str> = s["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut patched = Map::new();
        for (k, p) in props {
            let p = patch_of(p, schemas, patches);
            let p = if required.contains(k.as_str()) {
                p
            } else {
                nullable(p)
            };
            patched.insert(k.clone(), p);
        }
        out["properties"] = Value::Object(patched);
        if let Some(o) = out.as_object_mut() {
            o.remove("required");
        }
        // Unknown members are refused, but `null` for one removes what is not there: a no-op.
        if s.get("additionalProperties") == Some(&json!(false)) {
            out["additionalProperties"] = json!({"type": "null"});
        }
    }
    if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
        // A map's entries merge one by one: `null` removes an entry.
        out["additionalProperties"] = nullable(patch_of(ap, schemas, patches));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(members) = s.get(key).and_then(Value::as_array) {
            let patched: Vec<Value> = members
                .iter()
                .map(|m| patch_of(m, schemas, patches))
                .collect();
            // Patches of alternatives overlap (`{}` fits every one): `anyOf`, not `oneOf`.
            let key = if key == "oneOf" { "anyOf" } else { key };
            if let Some(o) = out.as_object_mut() {
                o.remove("oneOf");
            }
            out[key] = Value::Array(patched);
        }
    }
    out
}

fn accepts_null(s: &Value) -> bool {
    match &s["type"] {
        Value::String(t) => t == "null",
        Value::Array(ts) => ts.iter().any(|t| t == "null"),
        _ => ["oneOf", "anyOf"].iter().any(|k| {
            s[*k]
                .as_array()
                .is_some_and(|ms| ms.iter().any(accepts_null))
        }),
    }
}

fn nullable(s: Value) -> Value {
    if accepts_null(&s) {
        s
    } else {
        json!({"anyOf": [{"type": "null"}, s]})
    }
}

/// Whether the operation needs a token (it inherits the document's bearer requirement unless
/// it lists an empty requirement, i.e. the token is optional).
fn needs_token(op: &Value) -> bool {
    match op.get("security").and_then(Value::as_array) {
        None => true,
        Some(reqs) => !reqs
            .iter()
            .any(|r| r.as_object().is_some_and(Map::is_empty)),
    }
}

/// Declares the errors every operation can answer with and moves all of them to
/// `application/problem+json`.
fn error_responses(op: &mut Value) {
    let public = !needs_token(op);
    let has_body = op.get("requestBody").is_some();
    let mut common: Vec<(&str, &str)> = Vec::new();
    if !public {
        common.extend([
            ("400", "The request cannot be read: a path parameter does not parse (`bad_request`), or the body is not JSON (`invalid_json`)."),
            ("401", "No valid bearer token (`unauthorized`)."),
            ("403", "A group token on an operation that needs a platform token (`forbidden`)."),
            ("404", "No such resource, or not in the caller's group (`not_found`)."),
            ("422", "A query parameter or a body member breaks a rule, or is unknown (`validation` and the rule codes)."),
        ]);
        if has_body {
            common.extend([
                ("408", "The body did not arrive in time (`request_timeout`)."),
                ("413", "The body is over the size limit (`payload_too_large`)."),
                ("415", "The body is not sent with the content type declared here (`unsupported_media_type`)."),
            ]);
        }
    }
    common.push((
        "500",
        "A server fault; the server log has details (`internal`).",
    ));
    let Some(responses) = op["responses"].as_object_mut() else {
        return;
    };
    for (status, description) in common {
        let r = responses
            .entry(status.to_string())
            .or_insert_with(|| json!({}));
        if r["description"].as_str().is_none_or(str::is_empty) {
            r["description"] = json!(description);
        }
    }
    let problem = json!({"schema": {"$ref": "#/components/schemas/Problem"}});
    for (status, r) in responses.iter_mut() {
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        if r["description"].as_str().is_none_or(str::is_empty) {
            r["description"] = json!("Problem details (RFC 9457) with a stable `code`.");
        }
        r["content"] = json!({ PROBLEM: problem });
    }
}

/// utoipa writes an unsigned Rust integer as `format: int32`/`int64` with `minimum: 0`, but
/// `int32` stops at 2^31-1 and `int64` at 2^63-1 while the server takes a `u32` or `u64` to its
/// end: the format goes and the unsigned maximum is stated (for a `u8`/`u16`, which look the
/// same, that is looser than the server, which still refuses what is out of range).
fn unsigned(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.get("minimum") == Some(&json!(0)) && !o.contains_key("maximum") {
                let max = match o.get("format").and_then(Value::as_str) {
                    Some("int32") => Some(json!(u32::MAX)),
                    Some("int64") => Some(json!(u64::MAX)),
                    _ => None,
                };
                if let Some(max) = max {
                    o.remove("format");
                    o.insert("maximum".into(), max);
                }
            }
            o.values_mut().for_each(unsigned);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned),
        _ => {}
    }
}

/// Flattens every `allOf` whose members are all objects (a `#[serde(flatten)]`): one object
/// with every member's properties, closed if any member is closed.
fn flatten_all_of(doc: &mut Value) {
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    walk(doc, &schemas);
}

fn walk(v: &mut Value, schemas: &Map<String, Value>) {
    match v {
        Value::Object(o) => {
            for (_, child) in o.iter_mut() {
                walk(child, schemas);
            }
            if let Some(flat) = o.get("allOf").and_then(|a| flattened(a, schemas)) {
                o.remove("allOf");
                for (k, x) in flat {
                    o.entry(k).or_insert(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, schemas)),
        _ => {}
    }
}

fn resolve<'a>(s: &'a Value, schemas: &'a Map<String, Value>) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => schemas
            .get(r.trim_start_matches("#/components/schemas/"))
            .map_or(s, |t| resolve(t, schemas)),
        None => s,
    }
}

fn flattened(all_of: &Value, schemas: &Map<String, Value>) -> Option<Map<String, Value>> {
    let members = all_of.as_array()?;
    let mut props = Map::new();
    let mut required: Vec<Value> = Vec::new();
    let mut closed = false;
    for m in members {
        let m = resolve(m, schemas);
        if m.get("allOf").is_some() {
            // A nested allOf: flatten it first.
            let inner = flattened(&m["allOf"], schemas)?;
            merge_object(
                &Value::Object(inner),
                &mut props,
                &mut required,
                &mut closed,
            )?;
        } else {
            merge_object(m, &mut props, &mut required, &mut closed)?;
        }
    }
    let mut out = Map::new();
    out.insert("type".into(), json!("object"));
    out.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    if closed {
        out.insert("additionalProperties".into(), json!(false));
    }
    Some(out)
}

fn merge_object(
    m: &Value,
    props: &mut Map<String, Value>,
    required: &mut Vec<Value>,
    closed: &mut bool,
) -> Option<()> {
    let p = m.get("properties")?.as_object()?;
    props.extend(p.clone());
    for r in m["required"].as_array().into_iter().flatten() {
        if !required.contains(r) {
            required.push(r.clone());
        }
    }
    *closed |= m.get("additionalProperties") == Some(&json!(false));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        super::super::api().1
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if METHODS.contains(&method.as_str()) {
                    out.push((method.to_uppercase(), path.clone(), op));
                }
            }
        }
        out
    }

    #[test]
    fn operation_ids_are_present_unique_and_camel_case() {
        let doc = doc();
        let mut seen = BTreeMap::new();
        for (m, p, op) in operations(&doc) {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p} has no operationId"));
            assert!(
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{m} {p}: operationId {id} is not camelCase (set operation_id on the handler)"
            );
            if let Some(other) = seen.insert(id.to_string(), format!("{m} {p}")) {
                panic!("operationId {id} on both {other} and {m} {p}");
            }
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{m} {p} has no tag"
            );
        }
    }

    #[test]
    fn every_error_response_is_problem_json_and_the_common_ones_are_declared() {
        let doc = doc();
        for (m, p, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = r["content"].as_object().unwrap();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        vec![PROBLEM],
                        "{m} {p} {status}"
                    );
                    assert_eq!(
                        content[PROBLEM]["schema"]["$ref"], "#/components/schemas/Problem",
                        "{m} {p} {status}"
                    );
                }
            }
            if needs_token(op) {
                for s in ["400", "401", "403", "404", "422", "500"] {
                    assert!(responses.contains_key(s), "{m} {p} lacks {s}");
                }
            }
            if op.get("requestBody").is_some() {
                for s in ["413", "415"] {
                    assert!(responses.contains_key(s), "{m} {p} lacks {s}");
                }
            }
        }
    }

    /// Finds every schema object (anywhere) with `allOf`.
    fn all_ofs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(o) => {
                if let Some(a) = o.get("allOf") {
                    out.push(a);
                }
                o.values().for_each(|x| all_ofs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| all_ofs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn no_all_of_has_a_closed_member() {
        let doc = doc();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        all_ofs(&doc, &mut found);
        for a in found {
            for m in a.as_array().unwrap() {
                assert_ne!(
                    resolve(m, schemas).get("additionalProperties"),
                    Some(&json!(false)),
                    "allOf over a closed object: {a}"
                );
            }
        }
        // The group view is one closed object with the group's members and `sync`.
        let gv = &schemas["GroupView"];
        assert_eq!(gv["additionalProperties"], json!(false));
        assert!(gv["properties"]["sync"].is_object() && gv["properties"]["sip"].is_object());
    }

    #[test]
    fn path_ids_limits_and_patch_bodies_carry_the_servers_rules() {
        let doc = doc();
        let op = &doc["paths"]["/api/v1/groups/{group}/users"]["get"];
        let params = op["parameters"].as_array().unwrap();
        let by = |n: &str| params.iter().find(|p| p["name"] == n).unwrap().clone();
        assert_eq!(
            by("group")["schema"]["$ref"],
            "#/components/schemas/GroupId"
        );
        assert_eq!(by("limit")["schema"]["minimum"], 1);
        assert_eq!(by("limit")["schema"]["maximum"], 1000);
        assert_eq!(by("limit")["schema"]["type"], "integer");
        let schemas = &doc["components"]["schemas"];
        assert!(schemas["Mac"]["pattern"].is_string());
        let patch = &doc["paths"]["/api/v1/devices/{mac}"]["patch"]["requestBody"]["content"];
        for ct in [MERGE_PATCH, "application/json"] {
            assert_eq!(
                patch[ct]["schema"]["$ref"],
                "#/components/schemas/DeviceInputPatch"
            );
        }
        let dp = &schemas["DeviceInputPatch"];
        assert_eq!(dp["additionalProperties"], json!({"type": "null"}));
        assert!(dp.get("required").is_none());
        // The device sync body may be left out; when sent it is a SyncRequest.
        let sync = &doc["paths"]["/api/v1/devices/{mac}/sync"]["post"]["requestBody"];
        assert_ne!(sync["required"], json!(true));
        assert_eq!(
            sync["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/SyncRequest"
        );
        // An optional member may be cleared with null; a required one may not.
        assert!(accepts_null(&dp["properties"]["name"]));
        // (`mac` is optional since softphones: the server assigns their id; `model` is required.)
        assert!(!accepts_null(&dp["properties"]["model"]));
    }

    #[test]
    fn the_public_routes_are_listed_without_a_required_token() {
        let doc = doc();
        for p in ["/healthz", "/api/v1/openapi.json"] {
            let op = &doc["paths"][p]["get"];
            assert!(op.is_object(), "{p} missing");
            assert!(!needs_token(op), "{p} must not need a token");
        }
        assert!(needs_token(&doc["paths"]["/metrics"]["get"]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    /// The document names a schema by its type's name: two types of one name would share one
    /// schema (the last registered wins, and the other's responses fail to validate), so every
    /// type deriving `ToSchema` has a name of its own.
    #[test]
    fn every_schema_type_has_a_name_of_its_own() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    rust_files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        rust_files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut found = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut derives = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[derive(") && line.contains("ToSchema") {
                    derives = true;
                    continue;
                }
                if !derives || line.starts_with("#[") || line.starts_with("///") {
                    continue;
                }
                derives = false;
                let item = line
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ")
                    .strip_prefix("struct ")
                    .or_else(|| line.split("enum ").nth(1));
                let Some(name) =
                    item.and_then(|i| i.split(|c: char| !c.is_alphanumeric() && c != '_').next())
                else {
                    continue;
                };
                found += 1;
                let at = f.display().to_string();
                if let Some(other) = seen.insert(name.to_string(), at.clone()) {
                    panic!("two schema types named {name}: {other} and {at}");
                }
            }
        }
        assert!(
            found > 50,
            "only {found} schema types found: the scan is broken"
        );
    }

    /// A firmware roll-out counts devices by firmware state, not by sync state.
    #[test]
    fn the_roll_out_view_counts_devices_by_firmware_state() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let devices = &schemas["TargetView"]["properties"]["devices"];
        let name = devices["$ref"]
            .as_str()
            .expect("a reference")
            .rsplit('/')
            .next()
            .unwrap();
        let props = schemas[name]["properties"].as_object().unwrap();
        let keys: BTreeSet<&str> = props.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["current", "upgrading", "behind", "failed"])
        );
        assert!(schemas["Counts"]["properties"]["in_sync"].is_object());
    }

    /// Every route of SPEC §4 that the server has is in the document.
    #[test]
    fn every_spec_route_is_documented() {
        let doc = doc();
        let have: BTreeSet<String> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        let g = "/api/v1/groups/{group}";
        let u = "/api/v1/groups/{group}/users/{ext}";
        let d = "/api/v1/devices/{mac}";
        let sl = "/api/v1/groups/{group}/shared-lines/{number}";
        let kp = "/api/v1/groups/{group}/key-profiles/{name}";
        let t = "/api/v1/models/{model}/templates/{file}";
        let want = [
            "GET /api/v1/groups".to_string(),
            "POST /api/v1/groups".into(),
            format!("GET {g}"),
            format!("PATCH {g}"),
            format!("DELETE {g}"),
            format!("GET {g}/users"),
            format!("POST {g}/users"),
            format!("GET {u}"),
            format!("PATCH {u}"),
            format!("DELETE {u}"),
            format!("POST {u}/duplicate"),
            format!("POST {u}/sip-password"),
            format!("POST {u}/unregister"),
            format!("GET {u}/shared-call-appearances"),
            format!("POST {u}/shared-call-appearances"),
            format!("GET {u}/shared-call-appearances/{{line_port}}"),
            format!("PATCH {u}/shared-call-appearances/{{line_port}}"),
            format!("DELETE {u}/shared-call-appearances/{{line_port}}"),
            format!("GET {g}/devices"),
            format!("POST {g}/devices"),
            format!("GET {d}"),
            format!("PATCH {d}"),
            format!("DELETE {d}"),
            format!("GET {d}/files/{{file}}"),
            format!("POST {d}/credentials"),
            format!("POST {d}/sync"),
            format!("PUT {d}/hot-desk"),
            format!("DELETE {d}/hot-desk"),
            format!("GET {d}/uploads"),
            format!("GET {d}/log"),
            format!("GET {g}/shared-lines"),
            format!("POST {g}/shared-lines"),
            format!("GET {sl}"),
            format!("PATCH {sl}"),
            format!("DELETE {sl}"),
            format!("GET {sl}/members"),
            format!("PUT {sl}/members"),
            format!("POST {g}/sync"),
            format!("GET {g}/key-profiles"),
            format!("POST {g}/key-profiles"),
            format!("GET {kp}"),
            format!("PATCH {kp}"),
            format!("DELETE {kp}"),
            "POST /api/v1/import".into(),
            "GET /api/v1/export".into(),
            "POST /api/v1/backup".into(),
            format!("POST {g}/import/{{kind}}"),
            "GET /api/v1/models".into(),
            "GET /api/v1/models/{model}".into(),
            format!("GET {t}"),
            format!("PUT {t}"),
            format!("DELETE {t}"),
            format!("GET {t}/versions"),
            format!("GET {t}/versions/{{version}}"),
            format!("POST {t}/rollback"),
            "GET /api/v1/changes".into(),
            "GET /api/v1/tokens".into(),
            "POST /api/v1/tokens".into(),
            "DELETE /api/v1/tokens/{id}".into(),
            "GET /api/v1/unprovisioned".into(),
            "GET /api/v1/openapi.json".into(),
            "GET /healthz".into(),
            "GET /metrics".into(),
        ];
        for w in want {
            assert!(have.contains(&w), "{w} is not in the OpenAPI document");
        }
    }

    /// The router is built from the annotated handlers only (utoipa-axum's `routes!`), so every
    /// route it serves is in the document: no plain axum route call under src/admin.
    #[test]
    fn every_admin_route_goes_through_the_documented_router() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin");
        let needle = [".route", "("].concat();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains(&needle),
                "{} adds a route outside the OpenAPI router; use routes!(...) with #[utoipa::path]",
                path.display()
            );
        }
    }

    #[test]
    fn patch_schemas_follow_merge_patch_rules() {
        let schemas: Map<String, Value> = serde_json::from_value(json!({
            "Inner": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "additionalProperties": false},
            "Outer": {"type": "object", "required": ["inner"], "properties": {
                "inner": {"$ref": "#/components/schemas/Inner"},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
                "list": {"type": "array", "items": {"$ref": "#/components/schemas/Inner"}}
            }, "additionalProperties": false}
        }))
        .unwrap();
        let mut patches = BTreeMap::new();
        let p = patch_of(
            &json!({"$ref": "#/components/schemas/Outer"}),
            &schemas,
            &mut patches,
        );
        assert_eq!(p["$ref"], "#/components/schemas/OuterPatch");
        let outer = &patches["OuterPatch"];
        assert!(outer.get("required").is_none());
        assert_eq!(outer["additionalProperties"], json!({"type": "null"}));
        // A nested object is patched member by member; a list is replaced whole.
        assert_eq!(
            outer["properties"]["inner"]["$ref"],
            "#/components/schemas/InnerPatch"
        );
        assert_eq!(
            outer["properties"]["list"]["anyOf"][1]["items"]["$ref"],
            "#/components/schemas/Inner"
        );
        // Map entries can be removed with null.
        assert!(accepts_null(
            &outer["properties"]["map"]["anyOf"][1]["additionalProperties"]
        ));
        let inner = &patches["InnerPatch"];
        assert!(!accepts_null(&inner["properties"]["a"]));
        assert!(accepts_null(&inner["properties"]["b"]));
    }
}

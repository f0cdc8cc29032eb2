//! The OpenAPI contract as the API tests check it against a running server, shared by the
//! hub's and the edge agent's tests: the served `/openapi.json` keeps the rules of
//! [`contract_violations`],
//! and what it says about tokens is what the server does: every operation that declares a
//! security requirement answers 401 without a token, and every operation declared open
//! answers without one.

use crate::server::openapi::{contract_violations, METHODS};
use serde_json::Value;

/// Fetches `<base>/openapi.json`, checks it and probes every operation without a token
/// (sending `headers`, e.g. the sync protocol header); returns the document.
pub async fn served_contract(client: &reqwest::Client, base: &str, headers: &[(&str, &str)]) -> Value {
    let response = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("openapi.json is JSON");
    let violations = contract_violations(&doc);
    assert!(
        violations.is_empty(),
        "/openapi.json breaks its contract:\n{}",
        violations.join("\n")
    );

    let global = doc.get("security").cloned();
    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let requirements = operation.get("security").or(global.as_ref()).and_then(Value::as_array);
            let open = requirements
                .is_none_or(|r| r.is_empty() || r.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())));
            let url = format!("{base}{}", concrete(path, operation));
            let mut request = client.request(method.to_uppercase().parse().expect("method"), url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if operation.get("requestBody").is_some() {
                request = request.json(&serde_json::json!({}));
            }
            let response = request.send().await.expect("probe");
            let status = response.status().as_u16();
            if open {
                assert!(
                    status != 401 && status < 500,
                    "{method} {path} is documented as open but answered {status} without a token"
                );
            } else {
                assert_eq!(
                    status, 401,
                    "{method} {path} is documented as needing a token but answered without one"
                );
            }
            probed += 1;
        }
    }
    assert!(probed >= 10, "only {probed} operations probed");
    doc
}

/// The path with each `{param}` replaced by a plausible value, and its required query
/// parameters appended.
fn concrete(path: &str, operation: &Value) -> String {
    let mut url = path.to_owned();
    let mut query = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap_or_default();
        let value = match parameter["schema"]["format"].as_str() {
            Some("uuid") => uuid::Uuid::now_v7().to_string(),
            _ if parameter["schema"]["type"] == "integer" => "1".to_owned(),
            _ => "x".to_owned(),
        };
        match parameter["in"].as_str() {
            Some("path") => url = url.replace(&format!("{{{name}}}"), &value),
            Some("query") if parameter["required"] == true => query.push(format!("{name}={value}")),
            _ => {}
        }
    }
    if query.is_empty() {
        url
    } else {
        format!("{url}?{}", query.join("&"))
    }
}

/// The schema a `$ref` names (or the value itself when it is no reference).
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).expect("$ref resolves"),
        None => schema,
    }
}

/// The schema of parameter `name` of operation `method path` in `doc`.
pub fn parameter_schema(doc: &Value, path: &str, method: &str, name: &str) -> Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} declares {name}"))["schema"]
        .clone()
}

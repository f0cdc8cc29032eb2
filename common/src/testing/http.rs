//! One HTTP call as the API tests see it: status, JSON body (or the text as a JSON string),
//! content type. Shared by the hub's and the edge agent's tests.

use serde_json::Value;

/// Sends and returns (status, JSON body, content type).
pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body, content_type)
}

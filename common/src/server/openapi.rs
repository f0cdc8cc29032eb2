//! The OpenAPI documents' shared half. Each handler's `#[utoipa::path]` says what that
//! route answers by itself (its body, its 404s, 409s and 422s, the 200 of a replayed
//! write); [`LayerAnswers`] adds what every route answers because of what stands in front
//! of its handler (the time limit, the body limit and JSON parsing, query and path
//! parsing, header checks, the bearer token), and gives every error answer its
//! `application/problem+json` body. So no document can forget an answer a layer gives,
//! and a new route gets them without being told.
//!
//! [`contract_violations`] is the other half: the rules both documents keep (valid 3.1
//! structure, parameters where the route puts them, every error documented with its body,
//! no untyped payloads), checked by each binary's API tests against its real
//! `/openapi.json`.

use crate::wire::problem::PROBLEM_CONTENT_TYPE;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::marker::PhantomData;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder, Type};

/// The HTTP methods a path item can hold, as the document spells them.
pub const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Adds the answers of the layers and extractors to every operation, and a problem body to
/// every error answer (use in `#[openapi(modifiers(&LayerAnswers))]`, after the modifier
/// that sets the security schemes).
#[derive(Debug)]
pub struct LayerAnswers;

impl utoipa::Modify for LayerAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        let global = openapi.security.clone();
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                let secured = operation
                    .security
                    .as_ref()
                    .or(global.as_ref())
                    .is_some_and(|requirements| needs_credentials(requirements));
                add_layer_answers(operation, secured);
                for (status, response) in operation.responses.responses.iter_mut() {
                    if let RefOr::T(response) = response {
                        if response.description.is_empty() {
                            // The spec requires a description; a body-only answer has none.
                            response.description = axum::http::StatusCode::from_bytes(status.as_bytes())
                                .ok()
                                .and_then(|s| s.canonical_reason())
                                .unwrap_or("answer")
                                .to_owned();
                        }
                        if is_error(status) && response.content.is_empty() {
                            *response = problem_answer(&response.description);
                        }
                    }
                }
            }
        }
    }
}

/// An error answer: `description`, with an `application/problem+json` body.
pub fn problem_answer(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Whether a list of security requirements demands credentials (an empty requirement
/// `{}` among them makes them optional: the route is open).
fn needs_credentials(requirements: &[SecurityRequirement]) -> bool {
    !requirements.is_empty() && !requirements.iter().any(|r| *r == SecurityRequirement::default())
}

fn is_error(status: &str) -> bool {
    status.starts_with('4') || status.starts_with('5')
}

/// Every operation of a path item.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_layer_answers(operation: &mut Operation, secured: bool) {
    let located = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| std::mem::discriminant(&p.parameter_in) == std::mem::discriminant(&place))
    };
    let mut answers: Vec<(&str, &str)> = Vec::new();
    if located(ParameterIn::Path) {
        answers.push(("400", "invalid_path: a path segment is not a valid id"));
    }
    if located(ParameterIn::Query) {
        answers.push((
            "400",
            "invalid_query: the query string does not parse or is out of range",
        ));
    }
    if located(ParameterIn::Header) {
        answers.push(("400", "a request header is malformed (the code names it)"));
    }
    if operation.request_body.is_some() {
        answers.extend([
            ("400", "malformed_json, missing_body or unreadable_body"),
            ("413", "body_too_large: the body is over the size limit"),
            ("415", "unsupported_media_type: send Content-Type: application/json"),
            (
                "422",
                "invalid_body: the JSON does not have the request's shape or a value is out of range",
            ),
        ]);
    }
    if secured {
        answers.push(("401", "unauthorized: no or unknown bearer token"));
    }
    answers.push((
        "503",
        "timeout: the request ran past the time limit (Retry-After says when to retry)",
    ));
    for (status, description) in answers {
        let responses = &mut operation.responses.responses;
        match responses.get_mut(status) {
            Some(RefOr::T(response)) if !response.description.contains(description) => {
                response.description = format!("{}; {description}", response.description);
            }
            Some(_) => {}
            None => {
                responses.insert(status.to_owned(), RefOr::T(Response::new(description)));
            }
        }
    }
}

/// The two success answers of a write: `201` for a new write and `200` for a retry of an
/// earlier request (same event id or `Idempotency-Key`), which answers the first write's
/// result again and writes nothing. `schema` names the body's component; `headers` are
/// the answer's headers as (name, integer?, description).
pub fn write_answers(
    schema: &str,
    headers: &[(&str, bool, &str)],
) -> std::collections::BTreeMap<String, RefOr<Response>> {
    let answer = |description: &str| {
        let mut builder = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        );
        for (name, integer, text) in headers {
            let kind = if *integer { Type::Integer } else { Type::String };
            builder = builder.header(
                *name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(kind))
                    .description(Some(*text))
                    .build(),
            );
        }
        RefOr::T(builder.build())
    };
    [
        ("201".to_owned(), answer("recorded")),
        (
            "200".to_owned(),
            answer("a retry of an earlier request (same event id or Idempotency-Key): its first answer again; nothing new was written"),
        ),
    ]
    .into_iter()
    .collect()
}

/// An optional request header of type string for a `#[utoipa::path]`'s parameters, as
/// the binary describes it; `schema` narrows the string (pattern, length, format).
pub fn optional_header(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .description(Some(description))
        .required(Required::False)
        .schema(Some(schema.schema_type(Type::String)))
        .build()
}

/// How a binary describes the optional headers every write takes: `Idempotency-Key` and
/// `X-Correlation-Id` (the same rules on both binaries, described in each one's terms) and
/// the binary's own header (`If-Match` on the hub, `X-Till-Id` at the agent).
pub trait WriteHeaderDocs {
    /// `Idempotency-Key`: what scopes it here.
    const IDEMPOTENCY_KEY: &'static str;
    /// `X-Correlation-Id`: what it groups.
    const CORRELATION_ID: &'static str;
    /// The binary's own header (see [`optional_header`]).
    fn own_header() -> Parameter;
}

/// The optional headers of every write, for the `params(...)` of a `#[utoipa::path]`:
/// `Idempotency-Key` (1..=200 visible ASCII characters, spaces inside), the binary's own
/// header, and `X-Correlation-Id` (a UUID).
#[derive(Debug)]
pub struct WriteHeaderParams<D>(PhantomData<D>);

impl<D: WriteHeaderDocs> utoipa::IntoParams for WriteHeaderParams<D> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let idempotency_key = ObjectBuilder::new()
            .min_length(Some(1))
            .max_length(Some(200))
            .pattern(Some(r"^[!-~]([ -~]*[!-~])?$"));
        let uuid = ObjectBuilder::new().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
        vec![
            optional_header("Idempotency-Key", D::IDEMPOTENCY_KEY, idempotency_key),
            D::own_header(),
            optional_header("X-Correlation-Id", D::CORRELATION_ID, uuid),
        ]
    }
}

/// Rules both documents keep, checked against a served `/openapi.json`: the empty list
/// when all hold, else one line per broken rule naming the operation.
///
/// - the document is OpenAPI 3.1 with `info`, `paths` and unique `operationId`s, and every
///   `$ref` resolves;
/// - each `{name}` of a path is declared `in: path` (required), and nothing else is;
///   every other parameter is `in: query` or `in: header`, with a schema;
/// - each operation has a 2xx answer, a 503 (the time limit), a 400 when it takes
///   parameters, 400/413/415/422 when it takes a body, and 401 when it needs credentials;
///   every 4xx and 5xx answer has an `application/problem+json` body;
/// - every security requirement names a declared scheme;
/// - no schema is an object without properties (an untyped payload) unless it says what
///   its extra members are.
pub fn contract_violations(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if !doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")) {
        problems.push(format!("openapi is {}, not 3.1.x", doc["openapi"]));
    }
    if !doc["info"]["title"].is_string() || !doc["info"]["version"].is_string() {
        problems.push("info needs a title and a version".into());
    }
    let schemes: HashSet<&str> = doc["components"]["securitySchemes"]
        .as_object()
        .map(|s| s.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let global_security = doc.get("security");
    let mut operation_ids = HashSet::new();
    let Some(paths) = doc["paths"].as_object() else {
        problems.push("no paths".into());
        return problems;
    };
    for (path, item) in paths {
        let template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let name = format!("{} {path}", method.to_uppercase());
            let mut complain = |what: String| problems.push(format!("{name}: {what}"));
            match operation["operationId"].as_str() {
                Some(id) if !operation_ids.insert(id.to_owned()) => complain(format!("operationId {id} twice")),
                Some(_) => {}
                None => complain("no operationId".into()),
            }
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let mut in_path = BTreeSet::new();
            for parameter in &parameters {
                let pname = parameter["name"].as_str().unwrap_or("?");
                match parameter["in"].as_str() {
                    Some("path") => {
                        in_path.insert(pname);
                        if parameter["required"] != Value::Bool(true) {
                            complain(format!("path parameter {pname} is not required"));
                        }
                    }
                    Some("query" | "header") => {
                        if template.contains(pname) {
                            complain(format!("{pname} is in the path but declared elsewhere"));
                        }
                    }
                    other => complain(format!("parameter {pname} is in {other:?}")),
                }
                if !parameter["schema"].is_object() {
                    complain(format!("parameter {pname} has no schema"));
                }
            }
            if in_path.iter().copied().collect::<BTreeSet<_>>() != template {
                complain(format!(
                    "path parameters {in_path:?} do not match the path's {template:?}"
                ));
            }
            let responses = operation["responses"].as_object().cloned().unwrap_or_default();
            let documents = |status: &str| responses.contains_key(status);
            if !responses.keys().any(|s| s.starts_with('2')) {
                complain("no 2xx answer".into());
            }
            let mut expected = vec!["503"];
            if !parameters.is_empty() {
                expected.push("400");
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415", "422"]);
            }
            let security = operation.get("security").or(global_security);
            let requirements = security.and_then(Value::as_array).cloned().unwrap_or_default();
            let open =
                requirements.is_empty() || requirements.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty()));
            if !open {
                expected.push("401");
            }
            for requirement in &requirements {
                for scheme in requirement.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !schemes.contains(scheme.as_str()) {
                        complain(format!("security names the undeclared scheme {scheme}"));
                    }
                }
            }
            for status in expected {
                if !documents(status) {
                    complain(format!("does not document its {status} answer"));
                }
            }
            for (status, response) in &responses {
                if is_error(status) && response["content"][PROBLEM_CONTENT_TYPE]["schema"].is_null() {
                    complain(format!("{status} answer has no {PROBLEM_CONTENT_TYPE} body"));
                }
                if response["description"].as_str().is_none_or(str::is_empty) {
                    complain(format!("{status} answer has no description"));
                }
            }
        }
    }
    walk(doc, "#", &mut |pointer, value| {
        if let Some(target) = value.get("$ref").and_then(Value::as_str) {
            let resolved = target.strip_prefix('#').and_then(|p| doc.pointer(p));
            if resolved.is_none() {
                problems.push(format!("{pointer}: $ref {target} does not resolve"));
            }
        }
        let is_schema_object = value.get("type") == Some(&Value::String("object".into()));
        if is_schema_object
            && value.get("properties").is_none()
            && value
                .get("additionalProperties")
                .is_none_or(|extra| extra == &Value::Bool(true))
            && !pointer.ends_with("/securitySchemes")
        {
            problems.push(format!(
                "{pointer}: an object schema with no properties (untyped payload)"
            ));
        }
    });
    problems
}

/// Calls `visit` on every JSON object in `value` with its JSON pointer.
fn walk(value: &Value, pointer: &str, visit: &mut impl FnMut(&str, &Value)) {
    match value {
        Value::Object(map) => {
            visit(pointer, value);
            for (key, child) in map {
                walk(
                    child,
                    &format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")),
                    visit,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{pointer}/{i}"), visit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(operation: Value) -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {"/v1/things/{id}": {"get": operation}},
            "components": {"schemas": {"Problem": {"type": "object", "properties": {"code": {"type": "string"}}}}}
        })
    }

    fn problem(description: &str) -> Value {
        json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
    }

    fn good() -> Value {
        json!({
            "operationId": "get_thing",
            "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer"}}
            ],
            "responses": {"200": {"description": "ok"}, "400": problem("bad"), "503": problem("timeout")}
        })
    }

    #[test]
    fn a_document_that_keeps_every_rule_passes() {
        assert_eq!(contract_violations(&doc(good())), Vec::<String>::new());
    }

    #[test]
    fn a_query_parameter_declared_in_the_path_is_caught() {
        let mut op = good();
        op["parameters"][1]["in"] = json!("path");
        op["parameters"][1]["required"] = json!(true);
        let found = contract_violations(&doc(op));
        assert!(found.iter().any(|p| p.contains("do not match the path")), "{found:?}");
    }

    #[test]
    fn undocumented_errors_and_bodiless_errors_are_caught() {
        let mut op = good();
        op["responses"]["503"] = json!({"description": "timeout"});
        op["security"] = json!([{"bearer": []}]);
        let found = contract_violations(&doc(op));
        assert!(
            found
                .iter()
                .any(|p| p.contains("503 answer has no application/problem+json")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("does not document its 401")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("undeclared scheme bearer")),
            "{found:?}"
        );
    }

    #[test]
    fn untyped_objects_and_dangling_refs_are_caught() {
        let mut op = good();
        op["responses"]["200"]["content"] = json!({"application/json": {"schema": {"type": "object"}}});
        op["responses"]["400"]["content"]["application/problem+json"]["schema"]["$ref"] =
            json!("#/components/schemas/Nope");
        let found = contract_violations(&doc(op));
        assert!(found.iter().any(|p| p.contains("untyped payload")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("does not resolve")), "{found:?}");
    }

    #[test]
    fn layer_answers_fill_in_what_the_layers_answer() {
        use utoipa::openapi::path::{OperationBuilder, ParameterBuilder};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::{PathItem, PathsBuilder, ResponseBuilder};
        let operation = OperationBuilder::new()
            .operation_id(Some("thing"))
            .parameter(ParameterBuilder::new().name("id").parameter_in(ParameterIn::Path))
            .request_body(Some(RequestBodyBuilder::new().build()))
            .response("201", ResponseBuilder::new().description("made"))
            .response("404", ResponseBuilder::new().description("thing_not_found"))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .build();
        let mut openapi = OpenApi::new(
            utoipa::openapi::Info::new("t", "1"),
            PathsBuilder::new().path(
                "/v1/things/{id}",
                PathItem::new(utoipa::openapi::HttpMethod::Post, operation),
            ),
        );
        utoipa::Modify::modify(&LayerAnswers, &mut openapi);
        let json = serde_json::to_value(&openapi).unwrap();
        let responses = &json["paths"]["/v1/things/{id}"]["post"]["responses"];
        for status in ["400", "401", "404", "413", "415", "422", "503"] {
            assert_eq!(
                responses[status]["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"], "#/components/schemas/Problem",
                "{status}"
            );
        }
        assert!(responses["400"]["description"]
            .as_str()
            .unwrap()
            .contains("invalid_path"));
        assert!(responses["400"]["description"]
            .as_str()
            .unwrap()
            .contains("malformed_json"));
        assert!(responses["201"]["content"].is_null(), "a success keeps its own body");
    }

    struct Docs;

    impl WriteHeaderDocs for Docs {
        const IDEMPOTENCY_KEY: &'static str = "scoped by the test";
        const CORRELATION_ID: &'static str = "groups the test";
        fn own_header() -> Parameter {
            optional_header("X-Own", "ours", ObjectBuilder::new().pattern(Some("^a$")))
        }
    }

    #[test]
    fn the_write_headers_are_optional_strings_in_the_binarys_terms() {
        use utoipa::IntoParams;
        // Given a binary's descriptions, when its write headers are listed,
        let params = serde_json::to_value(WriteHeaderParams::<Docs>::into_params(|| None)).unwrap();
        // then each is an optional header string, in order, with the shared rules.
        let names: Vec<_> = params.as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
        assert_eq!(names, ["Idempotency-Key", "X-Own", "X-Correlation-Id"]);
        for param in params.as_array().unwrap() {
            assert_eq!((&param["in"], &param["required"]), (&json!("header"), &json!(false)));
            assert_eq!(param["schema"]["type"], "string");
        }
        assert_eq!(params[0]["description"], "scoped by the test");
        assert_eq!(params[0]["schema"]["maxLength"], 200);
        assert_eq!(params[1]["schema"]["pattern"], "^a$");
        assert_eq!(params[2]["schema"]["format"], "uuid");
        assert_eq!(params[2]["description"], "groups the test");
    }
}

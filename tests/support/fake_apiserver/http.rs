//! The HTTP side: a listener whose connections can be reset on demand, and the one handler that routes,
//! applies faults, serves from the store and logs.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

mod selector;

use super::faults::{Fault, RequestRecord, Verb};
use super::rbac;
use super::resource::{parse_path, Target};
use super::status::{go_quote, ApiError, FieldError};
use super::store::PatchBody;
use super::validate::{decode, json_type, Decoded};
use super::{watch, Shared};
pub use selector::{FieldSelector, LabelSelector};

/// The largest request body accepted: the API server's `MaxRequestBodyBytes` (3 MiB); a larger one is
/// 413 `RequestEntityTooLarge`, an object too large for its resource fails validation (422).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// The user of a request without credentials (the real server's anonymous authentication).
const ANONYMOUS: &str = "system:anonymous";
/// How long to wait before accepting again after an accept error (out of file descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// A TCP listener whose connections carry a reset switch, so a handler can drop its own connection.
pub struct ResettableListener(pub TcpListener, pub Arc<std::sync::atomic::AtomicUsize>);

/// The reset switch of one connection, handed to the handler as its connect info.
#[derive(Clone, Debug, Default)]
pub struct Connection(Arc<AtomicBool>);

/// A TCP stream that fails every read and write once its [`Connection`] is reset, with `SO_LINGER` 0 so
/// that closing it sends a TCP RST.
pub struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

/// The query string of a request, percent-decoded.
#[derive(Clone, Debug, Default)]
pub struct Query(HashMap<String, String>);

/// The router: every request goes to one handler, which knows the API's URL scheme.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let target = parse_path(parts.uri.path());
    let query = Query::parse(parts.uri.query().unwrap_or_default());
    let verb = target
        .as_ref()
        .and_then(|target| verb_of(&parts.method, target, &query));
    let record = RequestRecord {
        at: Instant::now(),
        wall: Utc::now(),
        token: bearer_token(&parts.headers),
        verb,
        resource: target.as_ref().map(|target| target.resource),
        name: target.as_ref().and_then(|target| target.name.clone()),
        selected_name: target
            .as_ref()
            .filter(|_| matches!(verb, Some(Verb::List | Verb::Watch)))
            .and_then(|target| {
                let selector = query.get("fieldSelector").unwrap_or_default();
                FieldSelector::parse(selector, target.resource)
                    .ok()
                    .and_then(|selector| selector.exact_name().map(str::to_owned))
            }),
        status: None,
    };
    match shared.faults.lookup(record.token.as_deref(), verb) {
        Fault::None => {}
        Fault::Latency(delay) => tokio::time::sleep(delay).await,
        Fault::Status(code) => {
            return finish(&shared, record, error_response(&ApiError::injected(code)))
        }
        Fault::Hang => {
            shared.log.push(record);
            shared.shutdown.cancelled().await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Fault::Reset => {
            shared.log.push(record);
            connection.reset();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    if let (Some(upstream), Some(token)) = (&shared.upstream, record.token.as_deref()) {
        let watch = verb == Some(Verb::Watch);
        // Ends with `break_watches` or with the server (the breaker is a child of its shutdown).
        let breaker = shared.watch_breaker();
        let response = upstream.forward(token, parts, body, watch, breaker).await;
        return finish(&shared, record, response);
    }
    let response =
        if let Some(token) = record.token.as_deref().filter(|_| {
            parts.method == Method::POST && parts.uri.path() == rbac::ACCESS_REVIEW_PATH
        }) {
            access_review(&shared, token, body).await
        } else if record.token.is_none() {
            error_response(&anonymous(
                &parts.method,
                parts.uri.path(),
                &record,
                target.as_ref(),
            ))
        } else if let Some(denied) = forbidden(&shared, &record, target.as_ref()) {
            error_response(&denied)
        } else {
            serve(&shared, &parts.headers, target, verb, &query, body)
                .await
                .unwrap_or_else(|error| error_response(&error))
        };
    finish(&shared, record, response)
}

/// The 403 for a request the client's RBAC rules deny, if they do.
fn forbidden(shared: &Shared, record: &RequestRecord, target: Option<&Target>) -> Option<ApiError> {
    let (token, target, verb) = (record.token.as_deref()?, target?, record.verb?);
    let name = record.name.as_deref().or(record.selected_name.as_deref());
    (!shared.rbac.allows(token, target.resource, verb, name)).then(|| {
        ApiError::forbidden(
            token,
            rbac::verb_name(verb),
            target.resource,
            &target.namespace,
            target.name.as_deref(),
        )
    })
}

/// The answer to a request without credentials: the real server authenticates it as
/// `system:anonymous`, whom RBAC allows nothing the fake serves (403).
fn anonymous(
    method: &Method,
    path: &str,
    record: &RequestRecord,
    target: Option<&Target>,
) -> ApiError {
    if let (Some(target), Some(verb)) = (target, record.verb) {
        return ApiError::forbidden(
            ANONYMOUS,
            rbac::verb_name(verb),
            target.resource,
            &target.namespace,
            target.name.as_deref(),
        );
    }
    if *method == Method::POST && path == rbac::ACCESS_REVIEW_PATH {
        return ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "selfsubjectaccessreviews.authorization.k8s.io is forbidden: User \"{ANONYMOUS}\" cannot \
                 create resource \"selfsubjectaccessreviews\" in API group \"authorization.k8s.io\" at the \
                 cluster scope"
            ),
            details: Some(super::status::details(
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
            )),
        };
    }
    ApiError::forbidden_path(ANONYMOUS, &method.as_str().to_lowercase(), path)
}

/// Answers a `SelfSubjectAccessReview` (201, the review with its status).
async fn access_review(shared: &Shared, token: &str, body: Body) -> Response {
    let review = read_body(body)
        .await
        .and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| ApiError::bad_request(format!("decoding the review: {e}")))
        })
        .and_then(|review| shared.rbac.review(token, super::NAMESPACE, review));
    match review {
        Ok(review) => json_response(201, &review),
        Err(error) => error_response(&error),
    }
}

fn finish(shared: &Shared, mut record: RequestRecord, response: Response) -> Response {
    record.status = Some(response.status().as_u16());
    shared.log.push(record);
    response
}

async fn serve(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    target: Option<Target>,
    verb: Option<Verb>,
    query: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let target = target.ok_or_else(ApiError::no_route)?;
    let verb = verb.ok_or_else(ApiError::method_not_allowed)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ApiError::too_large_body(MAX_BODY_BYTES));
    }
    let body = read_body(body).await?;
    let (resource, namespace) = (target.resource, target.namespace.as_str());
    let name = target.name.as_deref().unwrap_or_default();
    match verb {
        Verb::Get => Ok(json_response(
            200,
            &shared.store().get(resource, namespace, name)?,
        )),
        Verb::List => list(shared, &target, query),
        Verb::Watch => watch::start(shared, &target, query),
        Verb::Create => {
            let Decoded { object, warnings } = decode(resource, &body)?;
            let stored = shared.store().create(resource, namespace, object)?;
            Ok(with_warnings(json_response(201, &stored), &warnings))
        }
        Verb::Update => {
            let Decoded { object, warnings } = decode(resource, &body)?;
            let (stored, created) = shared.store().update(resource, namespace, name, object)?;
            let code = if created { 201 } else { 200 };
            Ok(with_warnings(json_response(code, &stored), &warnings))
        }
        Verb::Delete => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                parse_json(&body)?
            };
            Ok(json_response(
                200,
                &shared.store().delete(resource, namespace, name, &options)?,
            ))
        }
        Verb::Patch => {
            let patch = patch_body(headers, &body)?;
            let Decoded { object, warnings } =
                shared.store().patch(resource, namespace, name, &patch)?;
            Ok(with_warnings(json_response(200, &object), &warnings))
        }
    }
}

/// Reads a request body of at most [`MAX_BODY_BYTES`] (413 beyond).
async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large_body(MAX_BODY_BYTES))
}

/// Adds one `Warning` header per warning, as the API server sends them (`299 - "text"`).
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        if let Ok(value) = format!("299 - {}", go_quote(warning)).parse() {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A list: the current objects the selectors select (items without `kind`/`apiVersion`, as the real server
/// sends them), `limit` items at a time with a `continue` token. A resourceVersion the store has not
/// reached is 504; one it no longer holds, with `resourceVersionMatch=Exact`, is 410.
fn list(shared: &Shared, target: &Target, query: &Query) -> Result<Response, ApiError> {
    let resource = target.resource;
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), resource)
        .map_err(ApiError::bad_request)?;
    validate_list_options(query, false)?;
    let rv = query.get("resourceVersion").unwrap_or_default();
    let exact = query.get("resourceVersionMatch");
    let store = shared.store();
    let current = store.resource_version();
    let mut at = current;
    if !rv.is_empty() {
        let requested: u64 = rv.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version: resourceVersion: Invalid value: {}: strconv.ParseUint: \
                 parsing {}: invalid syntax",
                go_quote(rv),
                go_quote(rv)
            ))
        })?;
        if requested > current {
            return Err(ApiError::too_large_resource_version(requested, current));
        }
        if exact == Some("Exact") {
            at = requested;
        }
    }
    let limit: usize = match query.get("limit").unwrap_or_default() {
        "" => 0,
        text => text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {text:?}")))?,
    };
    let (start, token_rv) = match query.get("continue").unwrap_or_default() {
        "" => (String::new(), None),
        token => decode_continue(token)?,
    };
    if let Some(token_rv) = token_rv {
        at = token_rv;
    }
    let keep = |object: &Value| {
        labels.matches(&object["metadata"]["labels"])
            && fields.matches(resource, object)
            && object["metadata"]["name"].as_str().unwrap_or_default() >= start.as_str()
    };
    let Some(mut items) = store.list_at(resource, &target.namespace, at, keep) else {
        if token_rv.is_none() {
            return Err(ApiError::list_compacted());
        }
        // As etcd3's `handleCompactedErrorForPaging`: a token to continue at the latest version.
        let mut body = ApiError::continue_compacted().body();
        body["metadata"] = json!({ "continue": encode_continue(-1, &start) });
        return Ok(json_response(410, &body));
    };
    let mut metadata = json!({ "resourceVersion": at.to_string() });
    if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items
            .last()
            .and_then(|item| item["metadata"]["name"].as_str())
            .unwrap_or_default();
        let rv = i64::try_from(at).unwrap_or(i64::MAX);
        metadata["continue"] = json!(encode_continue(rv, &format!("{last}\u{0}")));
        metadata["remainingItemCount"] = json!(remaining);
    }
    for item in &mut items {
        if let Value::Object(fields) = item {
            fields.remove("kind");
            fields.remove("apiVersion");
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// apimachinery's `ValidateListOptions` (422 `Invalid` of `ListOptions`): `resourceVersionMatch` and
/// `sendInitialEvents` for a list (`watch == false`) or a watch.
pub fn validate_list_options(query: &Query, watch: bool) -> Result<(), ApiError> {
    let field = "resourceVersionMatch";
    let rv = query.get("resourceVersion").unwrap_or_default();
    let matching = query.get(field).unwrap_or_default();
    let send_initial = query.get("sendInitialEvents").is_some();
    let has_continue = !query.get("continue").unwrap_or_default().is_empty();
    let mut errors = Vec::new();
    if watch {
        if send_initial && matching != "NotOlderThan" {
            errors.push(FieldError::forbidden(
                field,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !matching.is_empty() {
            if !send_initial {
                errors.push(FieldError::forbidden(
                    field,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if matching != "NotOlderThan" {
                errors.push(FieldError::not_supported(
                    field,
                    matching,
                    &["NotOlderThan"],
                ));
            }
            if has_continue {
                errors.push(FieldError::forbidden(
                    field,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if !matching.is_empty() {
            if rv.is_empty() {
                errors.push(FieldError::forbidden(
                    field,
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if has_continue {
                errors.push(FieldError::forbidden(
                    field,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                errors.push(FieldError::not_supported(
                    field,
                    matching,
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if matching == "Exact" && rv == "0" {
                errors.push(FieldError::forbidden(
                    field,
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial {
            errors.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_options("ListOptions.meta.k8s.io", errors))
    }
}

/// A continue token as the real server makes one: base64 of `{"v","rv","start"}`, where `start` is the
/// first key (name) of the next page and `rv` the version the pages are read at (-1: the latest).
fn encode_continue(rv: i64, start: &str) -> String {
    let token = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": start });
    let bytes = k8s_openapi::ByteString(token.to_string().into_bytes());
    serde_json::to_value(bytes)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn decode_continue(token: &str) -> Result<(String, Option<u64>), ApiError> {
    let invalid = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(json!(token)).map_err(|_| invalid("illegal base64 data"))?;
    let parsed: Value =
        serde_json::from_slice(&bytes.0).map_err(|_| invalid("the token is not JSON"))?;
    let start = parsed["start"]
        .as_str()
        .ok_or_else(|| invalid("no start"))?;
    Ok((
        start.trim_end_matches('\u{0}').to_owned() + "\u{0}",
        parsed["rv"].as_u64(),
    ))
}

fn verb_of(method: &Method, target: &Target, query: &Query) -> Option<Verb> {
    let named = target.name.is_some();
    match *method {
        Method::GET if named => Some(Verb::Get),
        Method::GET if matches!(query.get("watch"), Some("1" | "true")) => Some(Verb::Watch),
        Method::GET => Some(Verb::List),
        Method::POST if !named => Some(Verb::Create),
        Method::PUT if named => Some(Verb::Update),
        Method::DELETE if named => Some(Verb::Delete),
        Method::PATCH if named => Some(Verb::Patch),
        _ => None,
    }
}

/// The patch a request carries, by its content type: a merge patch (a strategic merge patch of these
/// objects, which have no lists with merge keys, is one), a JSON patch, or 415.
fn patch_body(headers: &HeaderMap, body: &[u8]) -> Result<PatchBody, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|_| ApiError::bad_request("invalid JSON patch".to_owned()))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(format!(
                    "error decoding patch: json: cannot unmarshal {} into Go value of type \
                     map[string]interface {{}}",
                    json_type(&patch)
                )));
            }
            Ok(PatchBody::Merge(patch))
        }
        "application/json-patch+json" => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|_| ApiError::bad_request("invalid JSON patch".to_owned()))?;
            Ok(PatchBody::Json(patch))
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            Err(ApiError::apply_unsupported())
        }
        _ => Err(ApiError::unsupported_media_type()),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

/// A JSON response with `code`.
pub fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.code, &error.body())
}

// === impl Query ===

impl Query {
    /// Parses `a=b&c=d`, percent-decoding names and values.
    pub fn parse(query: &str) -> Query {
        let pairs = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            });
        Query(pairs.collect())
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === impl ResettableListener ===

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, _)) => {
                    self.1.fetch_add(1, Ordering::Relaxed);
                    let connection = Connection::default();
                    return (
                        ResettableStream {
                            inner,
                            reset: Arc::clone(&connection.0),
                        },
                        connection,
                    );
                }
                Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Connection::default())
    }
}

// === impl Connection ===

impl Connection {
    /// Resets the connection: its next read or write fails and the socket closes with a RST.
    pub fn reset(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, ResettableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

// === impl ResettableStream ===

impl ResettableStream {
    fn check(&self) -> io::Result<()> {
        if self.reset.load(Ordering::SeqCst) {
            // Linger 0 turns the close into a RST; failing is harmless (the close is then a FIN).
            let _ = self.inner.set_zero_linger();
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

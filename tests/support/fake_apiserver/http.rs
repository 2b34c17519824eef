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
use tokio_util::sync::CancellationToken;

use super::faults::{Fault, RequestRecord, Verb};
use super::rbac;
use super::resource::{parse_path, Target};
use super::status::ApiError;
use super::validate::decode;
use super::{watch, Shared};

/// The largest request body accepted: the API server's `MaxRequestBodyBytes` (3 MiB), so that an object
/// too large for its resource fails validation (422), as on the real server, rather than here.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How long to wait before accepting again after an accept error (out of file descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// A TCP listener whose connections carry a reset switch, so a handler can drop its own connection.
pub struct ResettableListener(pub TcpListener);

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
            .and_then(|target| query.name_selector(&target.namespace).ok().flatten()),
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
        let breaker = if watch {
            let breaker = shared.watch_breaker();
            let either = CancellationToken::new();
            let (a, b, c) = (breaker, shared.shutdown.clone(), either.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = a.cancelled() => {}
                    () = b.cancelled() => {}
                }
                c.cancel();
            });
            either
        } else {
            CancellationToken::new()
        };
        let response = upstream.forward(token, parts, body, watch, breaker).await;
        return finish(&shared, record, response);
    }
    let response =
        if let Some(token) = record.token.as_deref().filter(|_| {
            parts.method == Method::POST && parts.uri.path() == rbac::ACCESS_REVIEW_PATH
        }) {
            access_review(&shared, token, body).await
        } else if record.token.is_none() {
            error_response(&ApiError::unauthorized())
        } else if let Some(denied) = forbidden(&shared, &record, target.as_ref()) {
            error_response(&denied)
        } else {
            serve(
                &shared,
                &parts.method,
                &parts.headers,
                target,
                verb,
                &query,
                body,
            )
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
            rbac::verb_name(verb),
            target.resource,
            &target.namespace,
            target.name.as_deref(),
        )
    })
}

/// Answers a `SelfSubjectAccessReview` (201, the review with its status).
async fn access_review(shared: &Shared, token: &str, body: Body) -> Response {
    let review = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
        .and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| ApiError::bad_request(format!("decoding the review: {e}")))
        })
        .and_then(|review| shared.rbac.review(token, review));
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
    method: &Method,
    headers: &HeaderMap,
    target: Option<Target>,
    verb: Option<Verb>,
    query: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let target = target.ok_or_else(ApiError::no_route)?;
    let verb = verb.ok_or_else(|| ApiError::method_not_allowed(method))?;
    let body = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
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
            let object = decode(resource, &body)?;
            Ok(json_response(
                201,
                &shared.store().create(resource, namespace, object)?,
            ))
        }
        Verb::Update => {
            let object = decode(resource, &body)?;
            let (stored, created) = shared.store().update(resource, namespace, name, object)?;
            Ok(json_response(if created { 201 } else { 200 }, &stored))
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
            check_merge_patch(headers)?;
            let patch = parse_json(&body)?;
            Ok(json_response(
                200,
                &shared
                    .store()
                    .merge_patch(resource, namespace, name, &patch)?,
            ))
        }
    }
}

/// A list: the current objects (items without `kind`/`apiVersion`, as the real server sends them).
/// `resourceVersionMatch=Exact` with a compacted resourceVersion is 410; a future one is 504.
fn list(shared: &Shared, target: &Target, query: &Query) -> Result<Response, ApiError> {
    if !query.get("labelSelector").unwrap_or_default().is_empty() {
        return Err(ApiError::bad_request(
            "labelSelector is not supported by the fake API server".to_owned(),
        ));
    }
    let name = query.name_selector(&target.namespace)?;
    let store = shared.store();
    if let Some(rv) = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        let rv: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        if rv > store.resource_version() {
            return Err(ApiError::too_large_resource_version(
                rv,
                store.resource_version(),
            ));
        }
        if query.get("resourceVersionMatch") == Some("Exact") && rv < store.oldest_watchable() {
            return Err(ApiError::gone(rv, store.oldest_watchable()));
        }
    }
    let (mut items, rv) = store.list(target.resource, &target.namespace, name.as_deref());
    for item in &mut items {
        if let Value::Object(fields) = item {
            fields.remove("kind");
            fields.remove("apiVersion");
        }
    }
    let resource = target.resource;
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
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

fn check_merge_patch(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match content_type {
        // A strategic merge patch of a map-only object (a ConfigMap) is a merge patch.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => Ok(()),
        other => Err(ApiError::unsupported_media_type(other)),
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

    /// The object name selected by `fieldSelector` (`metadata.name=X`, `metadata.namespace=NS` allowed).
    pub fn name_selector(&self, namespace: &str) -> Result<Option<String>, ApiError> {
        let mut name = None;
        for term in self
            .get("fieldSelector")
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("invalid field selector term {term:?}"))
                })?;
            match field {
                "metadata.name" => name = Some(value.to_owned()),
                "metadata.namespace" if value == namespace => {}
                "metadata.namespace" => return Ok(Some(String::new())),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {other}"
                    )))
                }
            }
        }
        Ok(name)
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

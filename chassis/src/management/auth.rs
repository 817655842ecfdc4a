//! Who may do what: credentials (Basic, bearer tokens, the session cookie), roles, the per-source
//! throttle on failed credentials, and the same-origin check on state changes made with the cookie.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::warn;

use super::config::{verify_secret, Role};
use super::tls::PeerAddr;
use super::Server;

/// Failed credential checks one source may make for one user within [`FAILURE_WINDOW`] before its
/// further checks are refused.
pub(super) const MAX_FAILURES: usize = 20;
pub(super) const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Sources and users whose failures are remembered at once: beyond it the stalest are forgotten.
pub(super) const MAX_FAILING_SOURCES: usize = 4096;

pub(super) const VERIFIED_FOR: Duration = Duration::from_secs(300);
pub(super) const SESSION_FOR: Duration = Duration::from_secs(8 * 3600);
pub(super) const SESSION_COOKIE: &str = "diode_session";
/// Sent by the dashboard's own requests.
pub(super) const DASHBOARD_HEADER: &str = "x-diode-dashboard";
/// The user name failures of bearer tokens are throttled under.
pub(super) const TOKEN_USER: &str = "\0token";

/// Who made a request, as far as its credentials say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// Basic with the configured user, or a bearer token: explicit credentials on every request.
    Credentials(Role),
    /// The dashboard's session cookie, which a browser also attaches to requests other sites make.
    Session,
}

impl Caller {
    fn role(self) -> Role {
        match self {
            Caller::Credentials(role) => role,
            Caller::Session => Role::Operator,
        }
    }
}

/// Why a request's credentials were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Denied {
    Unauthorized,
    /// Too many failures from this source for this user; retry after this long.
    Throttled(Duration),
}

impl Server {
    /// How long `source` must wait before its next check for `user` is made, if too many failed lately.
    pub(super) fn throttled(&self, source: IpAddr, user: &str) -> Option<Duration> {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else { return Some(FAILURE_WINDOW) };
        let times = failures.get_mut(&(source, user.to_string()))?;
        while times.front().is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW) {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return None;
        }
        let oldest = times.front().copied().unwrap_or(now);
        Some((oldest + FAILURE_WINDOW).saturating_duration_since(now).max(Duration::from_secs(1)))
    }

    pub(super) fn note_failure(&self, source: IpAddr, user: &str) {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= MAX_FAILING_SOURCES {
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) <= FAILURE_WINDOW));
        }
        if failures.len() >= MAX_FAILING_SOURCES {
            let stalest = failures.iter().min_by_key(|(_, times)| times.back().copied()).map(|(key, _)| key.clone());
            if let Some(key) = stalest {
                failures.remove(&key);
            }
        }
        let times = failures.entry((source, user.to_string())).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
        if times.len() == MAX_FAILURES {
            warn!(%source, user = %user.replace('\0', ""), window_s = FAILURE_WINDOW.as_secs(), "management: too many failed credentials, this source is locked out for this user");
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Role> {
        let now = Instant::now();
        let Ok(mut verified) = self.verified.lock() else { return None };
        verified.retain(|_, (_, until)| *until > now);
        verified.get(key).map(|(role, _)| *role)
    }

    fn remember(&self, key: [u8; 32], role: Role) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(key, (role, Instant::now() + VERIFIED_FOR));
        }
    }

    pub(super) fn check_password(&self, source: IpAddr, user: &str, password: &str) -> Result<Role, Denied> {
        let (Some(name), Some(hash)) = (&self.config.username, &self.config.password_hash) else {
            return Err(Denied::Unauthorized);
        };
        let key = *blake3::hash(format!("user\0{user}\0{password}").as_bytes()).as_bytes();
        if let Some(role) = self.remembered(&key) {
            return Ok(role);
        }
        if let Some(wait) = self.throttled(source, user) {
            return Err(Denied::Throttled(wait));
        }
        if user == name && verify_secret(password, hash) {
            self.remember(key, Role::Operator);
            Ok(Role::Operator)
        } else {
            self.note_failure(source, user);
            Err(Denied::Unauthorized)
        }
    }

    pub(super) fn check_token(&self, source: IpAddr, token: &str) -> Result<Role, Denied> {
        if self.config.tokens.is_empty() {
            return Err(Denied::Unauthorized);
        }
        let key = *blake3::hash(format!("token\0{token}").as_bytes()).as_bytes();
        if let Some(role) = self.remembered(&key) {
            return Ok(role);
        }
        if let Some(wait) = self.throttled(source, TOKEN_USER) {
            return Err(Denied::Throttled(wait));
        }
        match self.config.tokens.iter().find(|(hash, _)| verify_secret(token, hash)) {
            Some((_, role)) => {
                self.remember(key, *role);
                Ok(*role)
            }
            None => {
                self.note_failure(source, TOKEN_USER);
                Err(Denied::Unauthorized)
            }
        }
    }

    pub(super) fn check_session(&self, id: &str) -> bool {
        let now = Instant::now();
        let Ok(mut sessions) = self.sessions.lock() else { return false };
        sessions.retain(|_, until| *until > now);
        sessions.contains_key(id)
    }

    pub(super) fn authorised(&self, source: IpAddr, headers: &HeaderMap) -> Result<Caller, Denied> {
        if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(token) = value.strip_prefix("Bearer ") {
                return self.check_token(source, token.trim()).map(Caller::Credentials);
            }
            if let Some(encoded) = value.strip_prefix("Basic ") {
                let decoded = decode_base64(encoded.trim()).and_then(|b| String::from_utf8(b).ok());
                let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                    return Err(Denied::Unauthorized);
                };
                return self.check_password(source, user, password).map(Caller::Credentials);
            }
            return Err(Denied::Unauthorized);
        }
        match cookie(headers, SESSION_COOKIE) {
            Some(id) if self.check_session(&id) => Ok(Caller::Session),
            _ => Err(Denied::Unauthorized),
        }
    }
}

/// The least role a request needs: reading the metrics and the status is what a scraper does.
pub(super) fn required_role(method: &axum::http::Method, path: &str) -> Role {
    let reading = *method == axum::http::Method::GET || *method == axum::http::Method::HEAD;
    if reading && matches!(path, "/metrics" | "/api/v1/status") {
        Role::Metrics
    } else {
        Role::Operator
    }
}

/// Whether a state change carried by the session cookie comes from the dashboard on this server: its
/// own header, and an `Origin` naming the host the request was sent to.
pub(super) fn same_origin_dashboard(headers: &HeaderMap) -> Result<(), &'static str> {
    if !headers.contains_key(DASHBOARD_HEADER) {
        return Err("a state change with the session cookie must come from the dashboard (its header is missing)");
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err("a state change with the session cookie needs an Origin naming this server"),
    }
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

/// Standard base64 (with or without padding); `None` when malformed.
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    PADDING_OPTIONAL.decode(text).ok()
}

pub(super) fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// The address a request came from (unspecified when the server was not told, as in unit tests).
pub(super) fn source_of(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0 .0.ip())
}

pub(super) fn too_many(wait: Duration) -> Response {
    let mut response =
        refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed credentials from this address: wait a few seconds");
    if let Ok(value) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub(super) async fn require_auth(State(server): State<Arc<Server>>, mut request: Request, next: Next) -> Response {
    let source = source_of(&request);
    let caller = {
        let server = Arc::clone(&server);
        let headers = request.headers().clone();
        // Argon2 takes tens of milliseconds: not on the runtime's threads.
        tokio::task::spawn_blocking(move || server.authorised(source, &headers))
            .await
            .unwrap_or(Err(Denied::Unauthorized))
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(Denied::Throttled(wait)) => return too_many(wait),
        Err(Denied::Unauthorized) => {
            let mut response = refuse(StatusCode::UNAUTHORIZED, "credentials required");
            // The dashboard shows its own login form: a Basic challenge would make the browser pop its
            // own dialog over the page, so only other clients (curl, scrapers) are challenged.
            if !request.headers().contains_key(DASHBOARD_HEADER) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"diode\""));
            }
            return response;
        }
    };
    let needed = required_role(request.method(), request.uri().path());
    if caller.role() < needed {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("this token's role ({}) may read /metrics and the status only", caller.role().as_str()),
        );
    }
    let changes_state = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if caller == Caller::Session && changes_state {
        if let Err(reason) = same_origin_dashboard(request.headers()) {
            warn!(%source, path = request.uri().path(), reason, "management: cross-site request refused");
            return refuse(StatusCode::FORBIDDEN, reason);
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

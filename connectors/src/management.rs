//! The management API and dashboard both daemons serve on their management address.
//!
//! Every endpoint but the dashboard page and the login needs credentials: HTTP Basic with the
//! configured user, `Authorization: Bearer <token>` with the configured API token, or the session
//! cookie a login hands out. Passwords and tokens are stored only as Argon2 hashes (`hash-secret`
//! prints one); a verified credential is remembered (by its BLAKE3) for a few minutes, so a dashboard
//! polling every second does not pay an Argon2 hash each time. TLS is served when a certificate and key
//! are configured.
//!
//! Roles: the user (Basic or the dashboard's session) is an operator; each token has the role it was
//! configured with, `metrics` (read `/metrics` and the status, nothing else: what a scraper needs) or
//! `operator`. State changes made with the session cookie must come from the dashboard itself: they
//! need the dashboard's own header (a cross-site form cannot set one) and an `Origin` naming this
//! server. Failed credentials are throttled per source address and user, so a guesser locks out only
//! itself. The configuration export leaves out the secrets unless an operator asks for them.
//!
//! The daemon supplies what is shown and done through [`Managed`]; this module owns the routes, the
//! authentication, the Prometheus encoding and the embedded page.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use crate::config::{parse_addr, ConfigError};

/// The `[management]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// `ip:port` on the management network (never the data VIP).
    pub listen: String,
    /// Dashboard and API user.
    pub username: Option<String>,
    /// Argon2 hash of the user's password (`blue-tx hash-secret` prints one).
    pub password_hash: Option<String>,
    /// Argon2 hash of an API token for scripts and scrapers (`Authorization: Bearer`).
    pub token_hash: Option<String>,
    /// What `token_hash` may do: `metrics` (the default: read the metrics and the status) or `operator`.
    #[serde(default)]
    pub token_role: Role,
    /// More tokens, each with its role (`[[management.token]]`).
    #[serde(default)]
    pub token: Vec<TokenConfig>,
    /// PEM certificate chain and key: with both, the API is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// What a credential may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read the metrics and the status: a Prometheus scraper, a monitoring check.
    #[default]
    Metrics,
    /// Everything: demote, promote, export, import.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Operator => "operator",
        }
    }
}

/// One `[[management.token]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Argon2 hash of the token.
    pub hash: String,
    #[serde(default)]
    pub role: Role,
}

/// The management section after its checks.
#[derive(Clone, Debug)]
pub struct CheckedManagement {
    pub listen: SocketAddr,
    pub username: Option<String>,
    pub password_hash: Option<String>,
    /// Token hashes and their roles.
    pub tokens: Vec<(String, Role)>,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ManagementConfig {
    pub fn check(&self, path: &Path) -> Result<CheckedManagement, ConfigError> {
        let at = |field: &str| format!("management: {field}");
        let listen = parse_addr(&self.listen).map_err(|reason| ConfigError::new(path, at("listen"), reason))?;
        let mut hashes =
            vec![(at("password_hash"), self.password_hash.as_ref()), (at("token_hash"), self.token_hash.as_ref())];
        hashes.extend(
            self.token.iter().enumerate().map(|(i, t)| (at(&format!("token[{}]: hash", i + 1)), Some(&t.hash))),
        );
        for (field, hash) in hashes {
            if let Some(hash) = hash {
                argon2::PasswordHash::new(hash).map_err(|e| {
                    ConfigError::new(path, field, format!("not an Argon2 hash ({e}): use `hash-secret` to make one"))
                })?;
            }
        }
        match (&self.username, &self.password_hash) {
            (Some(_), None) => {
                return Err(ConfigError::new(path, at("password_hash"), "a username needs a password_hash"))
            }
            (None, Some(_)) => return Err(ConfigError::new(path, at("username"), "a password_hash needs a username")),
            (Some(name), Some(_)) if name.is_empty() || name.contains(':') => {
                return Err(ConfigError::new(path, at("username"), "must be non-empty and without ':'"))
            }
            _ => {}
        }
        if self.token_hash.is_none() && self.token_role != Role::default() {
            return Err(ConfigError::new(path, at("token_role"), "is the role of token_hash, which is not set"));
        }
        if self.password_hash.is_none() && self.token_hash.is_none() && self.token.is_empty() {
            return Err(ConfigError::new(
                path,
                "management",
                "no credentials: set username and password_hash, or token_hash (the API is never open)",
            ));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err(ConfigError::new(path, at("tls_cert"), "tls_cert and tls_key go together")),
        };
        Ok(CheckedManagement {
            listen,
            username: self.username.clone(),
            password_hash: self.password_hash.clone(),
            tokens: self
                .token_hash
                .iter()
                .map(|hash| (hash.clone(), self.token_role))
                .chain(self.token.iter().map(|t| (t.hash.clone(), t.role)))
                .collect(),
            tls,
        })
    }
}

/// Checks an optional `[management]` section; with HA, `vip` is the data VIP it must not bind.
pub fn check_section(
    path: &Path,
    section: Option<&ManagementConfig>,
    vip: Option<std::net::Ipv4Addr>,
) -> Result<Option<CheckedManagement>, ConfigError> {
    let Some(section) = section else { return Ok(None) };
    let checked = section.check(path)?;
    if vip.is_some_and(|vip| checked.listen.ip() == std::net::IpAddr::V4(vip)) {
        return Err(ConfigError::new(
            path,
            "management: listen",
            "is the data VIP: management listens on the node's own management address",
        ));
    }
    Ok(Some(checked))
}

/// An Argon2 hash (PHC string) of `secret` with a random salt.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
}

/// One labelled value of a metric.
pub type Sample = (Vec<(String, String)>, f64);

/// A metric family as the daemon reports it; encoded by prometheus-client at scrape time.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str, samples: Vec<Sample>) -> Family {
        Family { name, help, counter: true, samples }
    }

    pub fn gauge(name: &'static str, help: &'static str, samples: Vec<Sample>) -> Family {
        Family { name, help, counter: false, samples }
    }
}

/// A label list from `(name, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// What an HA command answered.
pub type HaFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What a daemon shows and does through its management API.
pub trait Managed: Send + Sync + 'static {
    /// The daemon's status object (`GET /api/v1/status`).
    fn status(&self) -> serde_json::Value;
    /// Recent files and uploads with their state.
    fn transfers(&self) -> serde_json::Value;
    fn metrics(&self) -> Vec<Family>;
    /// `demote` true: hand the VIP to the peer; false: take it.
    fn ha_command(&self, demote: bool) -> HaFuture;
    /// The configuration file this daemon runs with.
    fn config_path(&self) -> &Path;
    /// Runs the daemon's own configuration checks on a candidate file.
    fn check_config(&self, path: &Path, text: &str) -> Result<(), ConfigError>;
    /// A configuration was imported and saved: an active node with a pair pushes it to its standby
    /// (which applies it at once). Whether it was handed to the pair channel.
    fn config_imported(&self, _text: &str) -> bool {
        false
    }
}

struct Server {
    managed: Arc<dyn Managed>,
    config: CheckedManagement,
    /// BLAKE3 of verified credentials → their role and when the verification expires.
    verified: Mutex<HashMap<[u8; 32], (Role, Instant)>>,
    /// Session ids → expiry.
    sessions: Mutex<HashMap<String, Instant>>,
    /// When recent credential checks failed, per source address and user: guessing is slowed down for
    /// the guesser only, and the Argon2 work a stranger can cause is bounded.
    failures: Mutex<HashMap<(IpAddr, String), VecDeque<Instant>>>,
}

/// Failed credential checks one source may make for one user within [`FAILURE_WINDOW`] before its
/// further checks are refused.
const MAX_FAILURES: usize = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Sources and users whose failures are remembered at once: beyond it the stalest are forgotten.
const MAX_FAILING_SOURCES: usize = 4096;

const VERIFIED_FOR: Duration = Duration::from_secs(300);
const SESSION_FOR: Duration = Duration::from_secs(8 * 3600);
const SESSION_COOKIE: &str = "diode_session";
/// Sent by the dashboard's own requests.
const DASHBOARD_HEADER: &str = "x-diode-dashboard";
/// The user name failures of bearer tokens are throttled under.
const TOKEN_USER: &str = "\0token";

/// Who made a request, as far as its credentials say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
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
enum Denied {
    Unauthorized,
    /// Too many failures from this source for this user; retry after this long.
    Throttled(Duration),
}

impl Server {
    /// How long `source` must wait before its next check for `user` is made, if too many failed lately.
    fn throttled(&self, source: IpAddr, user: &str) -> Option<Duration> {
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

    fn note_failure(&self, source: IpAddr, user: &str) {
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

    fn check_password(&self, source: IpAddr, user: &str, password: &str) -> Result<Role, Denied> {
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

    fn check_token(&self, source: IpAddr, token: &str) -> Result<Role, Denied> {
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

    fn check_session(&self, id: &str) -> bool {
        let now = Instant::now();
        let Ok(mut sessions) = self.sessions.lock() else { return false };
        sessions.retain(|_, until| *until > now);
        sessions.contains_key(id)
    }

    fn authorised(&self, source: IpAddr, headers: &HeaderMap) -> Result<Caller, Denied> {
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
fn required_role(method: &axum::http::Method, path: &str) -> Role {
    let reading = *method == axum::http::Method::GET || *method == axum::http::Method::HEAD;
    if reading && matches!(path, "/metrics" | "/api/v1/status") {
        Role::Metrics
    } else {
        Role::Operator
    }
}

/// Whether a state change carried by the session cookie comes from the dashboard on this server: its
/// own header, and an `Origin` naming the host the request was sent to.
fn same_origin_dashboard(headers: &HeaderMap) -> Result<(), &'static str> {
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

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
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
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// The address a request came from (unspecified when the server was not told, as in unit tests).
fn source_of(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0 .0.ip())
}

fn too_many(wait: Duration) -> Response {
    let mut response =
        refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed credentials from this address: wait a few seconds");
    if let Ok(value) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn require_auth(State(server): State<Arc<Server>>, mut request: Request, next: Next) -> Response {
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

/// The routes, for [`serve`] and for tests.
fn router(server: Arc<Server>) -> Router {
    let protected = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/transfers", get(transfers))
        .route("/api/v1/ha/demote", post(demote))
        .route("/api/v1/ha/promote", post(promote))
        .route("/api/v1/config/export", get(export_config))
        .route("/api/v1/config/import", post(import_config))
        .route("/api/v1/logout", post(logout))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&server), require_auth));
    Router::new()
        .route("/", get(dashboard))
        .route("/api/v1/login", post(login))
        .merge(protected)
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(server)
}

async fn dashboard() -> Response {
    let mut response = Html(include_str!("dashboard.html")).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    response
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(
    State(server): State<Arc<Server>>,
    axum::extract::ConnectInfo(PeerAddr(peer)): axum::extract::ConnectInfo<PeerAddr>,
    Json(login): Json<Login>,
) -> Response {
    let server2 = Arc::clone(&server);
    let checked =
        tokio::task::spawn_blocking(move || server2.check_password(peer.ip(), &login.username, &login.password))
            .await
            .unwrap_or(Err(Denied::Unauthorized));
    match checked {
        Ok(_) => {}
        Err(Denied::Throttled(wait)) => return too_many(wait),
        Err(Denied::Unauthorized) => {
            warn!(source = %peer.ip(), "management login refused");
            return refuse(StatusCode::UNAUTHORIZED, "wrong username or password");
        }
    }
    let mut id = [0u8; 32];
    if getrandom::fill(&mut id).is_err() {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "no randomness for a session");
    }
    let id = crate::spool::hex_encode(&id);
    if let Ok(mut sessions) = server.sessions.lock() {
        sessions.insert(id.clone(), Instant::now() + SESSION_FOR);
    }
    let secure = if server.config.tls.is_some() { "; Secure" } else { "" };
    let cookie =
        format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_FOR.as_secs());
    let mut response = Json(json!({"ok": true})).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let (Some(id), Ok(mut sessions)) = (cookie(&headers, SESSION_COOKIE), server.sessions.lock()) {
        sessions.remove(&id);
    }
    Json(json!({"ok": true})).into_response()
}

async fn status(State(server): State<Arc<Server>>) -> Response {
    Json(server.managed.status()).into_response()
}

async fn transfers(State(server): State<Arc<Server>>) -> Response {
    Json(server.managed.transfers()).into_response()
}

async fn ha(server: &Server, demote: bool) -> Response {
    let verb = if demote { "demote" } else { "promote" };
    match server.managed.ha_command(demote).await {
        Ok(()) => {
            info!(command = verb, "HA command from the management API");
            Json(json!({"ok": true, "command": verb})).into_response()
        }
        Err(error) => refuse(StatusCode::CONFLICT, &error),
    }
}

async fn demote(State(server): State<Arc<Server>>) -> Response {
    ha(&server, true).await
}

async fn promote(State(server): State<Arc<Server>>) -> Response {
    ha(&server, false).await
}

#[derive(Deserialize)]
struct ExportQuery {
    secrets: Option<String>,
}

/// The configuration file, its secrets redacted unless an operator asks for them with
/// `?secrets=include` (logged: whoever holds that export holds the link keys).
async fn export_config(
    State(server): State<Arc<Server>>,
    axum::extract::Query(query): axum::extract::Query<ExportQuery>,
    request: Request,
) -> Response {
    let include = match query.secrets.as_deref() {
        None | Some("redact") => false,
        Some("include") => true,
        Some(other) => {
            return refuse(StatusCode::BAD_REQUEST, &format!("secrets={other}: use 'include' or leave it out"))
        }
    };
    let text = match tokio::fs::read_to_string(server.managed.config_path()).await {
        Ok(text) => text,
        Err(error) => {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot read the configuration: {error}"))
        }
    };
    let caller = request.extensions().get::<Caller>().copied();
    if include {
        warn!(source = %source_of(&request), caller = ?caller, "configuration exported WITH its secrets");
        return ([(header::CONTENT_TYPE, "application/toml")], text).into_response();
    }
    match crate::redact::redact(&text) {
        Ok((redacted, count)) => {
            info!(redacted = count, "configuration exported, secrets redacted");
            ([(header::CONTENT_TYPE, "application/toml")], redacted).into_response()
        }
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &error),
    }
}

/// Validates a configuration with the daemon's own checks and, only if it passes, replaces the file
/// (the previous one kept as `.bak`). The running daemon applies it at its next start.
async fn import_config(State(server): State<Arc<Server>>, headers: HeaderMap, body: String) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/toml") {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "an import is sent as Content-Type: application/toml");
    }
    let path = server.managed.config_path().to_path_buf();
    let current = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let body = match crate::redact::restore(&body, &current) {
        Ok(body) => body,
        Err((field, reason)) => {
            let error = format!("{}: {field}: {reason}", path.display());
            return (StatusCode::BAD_REQUEST, Json(json!({"error": error, "field": field, "reason": reason})))
                .into_response();
        }
    };
    if let Err(error) = server.managed.check_config(&path, &body) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error.to_string(), "field": error.field, "reason": error.reason})),
        )
            .into_response();
    }
    let saved = {
        let text = body.clone();
        tokio::task::spawn_blocking(move || crate::replicated::save(&path, &text)).await
    };
    match saved {
        Ok(Ok(())) => {
            info!("configuration imported through the management API");
            let replicated = server.managed.config_imported(&body);
            Json(json!({"ok": true, "applied": false, "restart_required": true, "replicated_to_standby": replicated}))
                .into_response()
        }
        Ok(Err(error)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot save: {error}")),
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

#[derive(Debug)]
struct Collector(Vec<Family>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::TypedMetric;
        for family in &self.0 {
            let kind = if family.counter { ConstCounter::<f64>::TYPE } else { ConstGauge::<f64>::TYPE };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                if family.counter {
                    ConstCounter::new(*value).encode(sample)?;
                } else {
                    ConstGauge::new(*value).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let mut registry = prometheus_client::registry::Registry::with_prefix("diode");
    registry.register_collector(Box::new(Collector(server.managed.metrics())));
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// Binds the management address and serves until `shutdown`. Binding errors are returned (a daemon
/// that cannot be managed should not start silently).
pub async fn spawn(
    config: CheckedManagement,
    managed: Arc<dyn Managed>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("management: cannot listen on {}: {e}", config.listen))?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listen = config.listen;
    let server = Arc::new(Server {
        managed,
        config,
        verified: Mutex::default(),
        sessions: Mutex::default(),
        failures: Mutex::default(),
    });
    let app = router(server).into_make_service_with_connect_info::<PeerAddr>();
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    info!(%listen, tls = tls.is_some(), "management API and dashboard listening");
    Ok(tokio::spawn(async move {
        let result = match tls {
            Some(acceptor) => {
                axum::serve(TlsListener { tcp: listener, acceptor }, app).with_graceful_shutdown(stop).await
            }
            None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
        };
        if let Err(error) = result {
            warn!(%error, "management server stopped");
        }
    }))
}

/// The address a connection came from, for throttling and logs (plain and TLS listeners alike).
#[derive(Clone, Copy, Debug)]
struct PeerAddr(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> PeerAddr {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> PeerAddr {
        PeerAddr(*stream.remote_addr())
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("management: tls_cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("management: tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("management: TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("management: TLS certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum. A client that
/// fails or stalls its handshake is dropped after a timeout.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(pair) => pair,
                Err(error) => {
                    warn!(%error, "management accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, peer),
                Ok(Err(error)) => warn!(%peer, %error, "management TLS handshake failed"),
                Err(_) => warn!(%peer, "management TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    impl Managed for Nothing {
        fn status(&self) -> serde_json::Value {
            json!({})
        }
        fn transfers(&self) -> serde_json::Value {
            json!({})
        }
        fn metrics(&self) -> Vec<Family> {
            Vec::new()
        }
        fn ha_command(&self, _demote: bool) -> HaFuture {
            Box::pin(async { Ok(()) })
        }
        fn config_path(&self) -> &Path {
            Path::new("/nonexistent")
        }
        fn check_config(&self, _path: &Path, _text: &str) -> Result<(), ConfigError> {
            Ok(())
        }
    }

    fn server(tokens: Vec<(String, Role)>) -> Server {
        let config = CheckedManagement {
            listen: "127.0.0.1:1".parse().unwrap(),
            username: Some("op".into()),
            password_hash: Some(hash_secret("right").unwrap()),
            tokens,
            tls: None,
        };
        Server {
            managed: Arc::new(Nothing),
            config,
            verified: Mutex::default(),
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    #[test]
    fn guessing_locks_out_only_the_guesser_and_the_window_releases_it() {
        let server = server(Vec::new());
        let (guesser, operator): (IpAddr, IpAddr) = ("198.18.0.66".parse().unwrap(), "198.18.0.7".parse().unwrap());
        assert_eq!(server.check_password(operator, "op", "right"), Ok(Role::Operator));
        for guess in 0..MAX_FAILURES {
            assert_eq!(server.check_password(guesser, "op", &format!("guess {guess}")), Err(Denied::Unauthorized));
        }
        let Err(Denied::Throttled(wait)) = server.check_password(guesser, "op", "another") else {
            panic!("the guesser is not throttled")
        };
        assert!(wait >= Duration::from_secs(1) && wait <= FAILURE_WINDOW, "{wait:?}");
        // The operator, from another address or as another user, is not locked out.
        server.verified.lock().unwrap().clear();
        assert_eq!(server.check_password(operator, "op", "right"), Ok(Role::Operator));
        assert_eq!(server.check_password(guesser, "other", "x"), Err(Denied::Unauthorized));
        // The window passes: the guesser may try again.
        for times in server.failures.lock().unwrap().values_mut() {
            for t in times.iter_mut() {
                *t -= FAILURE_WINDOW * 2;
            }
        }
        assert_eq!(server.check_password(guesser, "op", "right"), Ok(Role::Operator));
    }

    #[test]
    fn each_token_has_its_role_and_a_scrape_token_reads_only() {
        let tokens =
            vec![(hash_secret("scrape").unwrap(), Role::Metrics), (hash_secret("ops").unwrap(), Role::Operator)];
        let server = server(tokens);
        let any: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(server.check_token(any, "scrape"), Ok(Role::Metrics));
        assert_eq!(server.check_token(any, "ops"), Ok(Role::Operator));
        assert_eq!(server.check_token(any, "nope"), Err(Denied::Unauthorized));
        use axum::http::Method;
        assert_eq!(required_role(&Method::GET, "/metrics"), Role::Metrics);
        assert_eq!(required_role(&Method::GET, "/api/v1/status"), Role::Metrics);
        for (method, path) in [
            (Method::GET, "/api/v1/config/export"),
            (Method::GET, "/api/v1/transfers"),
            (Method::POST, "/api/v1/ha/demote"),
            (Method::POST, "/api/v1/config/import"),
            (Method::POST, "/metrics"),
        ] {
            assert_eq!(required_role(&method, path), Role::Operator, "{method} {path}");
        }
    }

    #[test]
    fn a_cookie_state_change_needs_the_dashboard_header_and_this_origin() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, header::HeaderValue::from_static(value));
            }
            map
        };
        let host = ("host", "198.18.100.11:9443");
        let ok = headers(&[host, (DASHBOARD_HEADER, "1"), ("origin", "https://198.18.100.11:9443")]);
        assert!(same_origin_dashboard(&ok).is_ok());
        for refused in [
            headers(&[host, ("origin", "https://198.18.100.11:9443")]),
            headers(&[host, (DASHBOARD_HEADER, "1")]),
            headers(&[host, (DASHBOARD_HEADER, "1"), ("origin", "https://evil.example")]),
            headers(&[host, (DASHBOARD_HEADER, "1"), ("origin", "null")]),
        ] {
            assert!(same_origin_dashboard(&refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(decode_base64("YWRtaW46c2VjcmV0"), Some(b"admin:secret".to_vec()));
        assert_eq!(decode_base64("YQ=="), Some(b"a".to_vec()));
        assert_eq!(decode_base64("Y!=="), None);
    }

    #[test]
    fn secrets_are_hashed_and_verified() {
        let hash = hash_secret("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret("correct horse", &hash));
        assert!(!verify_secret("wrong horse", &hash));
    }

    #[test]
    fn the_section_needs_credentials_and_real_hashes() {
        let section = |text: &str| {
            crate::config::parse_toml::<ManagementConfig>(Path::new("n.toml"), text)
                .and_then(|m| m.check(Path::new("n.toml")))
        };
        let error = section("listen = \"127.0.0.1:9000\"").unwrap_err();
        assert!(error.reason.contains("no credentials"), "{error}");
        let error = section("listen = \"127.0.0.1:9000\"\nusername = \"a\"\npassword_hash = \"plain\"").unwrap_err();
        assert_eq!(error.field, "management: password_hash");
        let hash = hash_secret("x").unwrap();
        assert!(section(&format!("listen = \"127.0.0.1:9000\"\ntoken_hash = \"{hash}\"")).is_ok());
    }
}

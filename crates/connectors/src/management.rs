//! The management API and dashboard both daemons serve on their management address.
//!
//! Every endpoint but the dashboard page and the login needs credentials: HTTP Basic with the
//! configured user, `Authorization: Bearer <token>` with the configured API token, or the session
//! cookie a login hands out. Passwords and tokens are stored only as Argon2 hashes (`hash-secret`
//! prints one); a verified credential is remembered (by its BLAKE3) for a few minutes, so a dashboard
//! polling every second does not pay an Argon2 hash each time. TLS is served when a certificate and key
//! are configured.
//!
//! The daemon supplies what is shown and done through [`Managed`]; this module owns the routes, the
//! authentication, the Prometheus encoding and the embedded page.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
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
    /// PEM certificate chain and key: with both, the API is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The management section after its checks.
#[derive(Clone, Debug)]
pub struct CheckedManagement {
    pub listen: SocketAddr,
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub token_hash: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ManagementConfig {
    pub fn check(&self, path: &Path) -> Result<CheckedManagement, ConfigError> {
        let at = |field: &str| format!("management: {field}");
        let listen = parse_addr(&self.listen).map_err(|reason| ConfigError::new(path, at("listen"), reason))?;
        for (field, hash) in [("password_hash", &self.password_hash), ("token_hash", &self.token_hash)] {
            if let Some(hash) = hash {
                argon2::PasswordHash::new(hash).map_err(|e| {
                    ConfigError::new(
                        path,
                        at(field),
                        format!("not an Argon2 hash ({e}): use `hash-secret` to make one"),
                    )
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
        if self.password_hash.is_none() && self.token_hash.is_none() {
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
            token_hash: self.token_hash.clone(),
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
    /// BLAKE3 of verified credentials → when the verification expires.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Session ids → expiry.
    sessions: Mutex<HashMap<String, Instant>>,
    /// When recent credential checks failed: guessing is slowed down, and the Argon2 work a stranger
    /// can cause is bounded.
    failures: Mutex<std::collections::VecDeque<Instant>>,
}

/// Failed credential checks allowed within [`FAILURE_WINDOW`] before further checks are refused.
const MAX_FAILURES: usize = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);

const VERIFIED_FOR: Duration = Duration::from_secs(300);
const SESSION_FOR: Duration = Duration::from_secs(8 * 3600);
const SESSION_COOKIE: &str = "diode_session";
/// Sent by the dashboard's own requests.
const DASHBOARD_HEADER: &str = "x-diode-dashboard";

impl Server {
    /// Whether too many checks failed lately: then no new Argon2 check is made.
    fn throttled(&self) -> bool {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else { return true };
        while failures.front().is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW) {
            failures.pop_front();
        }
        failures.len() >= MAX_FAILURES
    }

    fn note_failure(&self) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.push_back(Instant::now());
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        let Ok(mut verified) = self.verified.lock() else { return false };
        verified.retain(|_, until| *until > now);
        verified.contains_key(key)
    }

    fn remember(&self, key: [u8; 32]) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(key, Instant::now() + VERIFIED_FOR);
        }
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        let (Some(name), Some(hash)) = (&self.config.username, &self.config.password_hash) else { return false };
        let key = *blake3::hash(format!("user\0{user}\0{password}").as_bytes()).as_bytes();
        if self.remembered(&key) {
            return true;
        }
        if self.throttled() {
            return false;
        }
        let ok = user == name && verify_secret(password, hash);
        if ok {
            self.remember(key);
        } else {
            self.note_failure();
        }
        ok
    }

    fn check_token(&self, token: &str) -> bool {
        let Some(hash) = &self.config.token_hash else { return false };
        let key = *blake3::hash(format!("token\0{token}").as_bytes()).as_bytes();
        if self.remembered(&key) {
            return true;
        }
        if self.throttled() {
            return false;
        }
        let ok = verify_secret(token, hash);
        if ok {
            self.remember(key);
        } else {
            self.note_failure();
        }
        ok
    }

    fn check_session(&self, id: &str) -> bool {
        let now = Instant::now();
        let Ok(mut sessions) = self.sessions.lock() else { return false };
        sessions.retain(|_, until| *until > now);
        sessions.contains_key(id)
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(token) = value.strip_prefix("Bearer ") {
                return self.check_token(token.trim());
            }
            if let Some(encoded) = value.strip_prefix("Basic ") {
                let decoded = decode_base64(encoded.trim()).and_then(|b| String::from_utf8(b).ok());
                return decoded
                    .and_then(|d| d.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
                    .is_some_and(|(user, password)| self.check_password(&user, &password));
            }
            return false;
        }
        cookie(headers, SESSION_COOKIE).is_some_and(|id| self.check_session(&id))
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

async fn require_auth(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    if server.authorised(request.headers()) {
        return next.run(request).await;
    }
    let mut response = refuse(StatusCode::UNAUTHORIZED, "credentials required");
    // The dashboard shows its own login form: a Basic challenge would make the browser pop its own
    // dialog over the page, so only other clients (curl, scrapers) are challenged.
    if !request.headers().contains_key(DASHBOARD_HEADER) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"diode\""));
    }
    response
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
        header::HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    response
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(State(server): State<Arc<Server>>, Json(login): Json<Login>) -> Response {
    let server2 = Arc::clone(&server);
    let ok = tokio::task::spawn_blocking(move || server2.check_password(&login.username, &login.password))
        .await
        .unwrap_or(false);
    if !ok {
        warn!("management login refused");
        if server.throttled() {
            return refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed logins: wait a few seconds");
        }
        return refuse(StatusCode::UNAUTHORIZED, "wrong username or password");
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

async fn export_config(State(server): State<Arc<Server>>) -> Response {
    match tokio::fs::read_to_string(server.managed.config_path()).await {
        Ok(text) => ([(header::CONTENT_TYPE, "application/toml")], text).into_response(),
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot read the configuration: {error}")),
    }
}

/// Validates a configuration with the daemon's own checks and, only if it passes, replaces the file
/// (the previous one kept as `.bak`). The running daemon applies it at its next start.
async fn import_config(State(server): State<Arc<Server>>, body: String) -> Response {
    let path = server.managed.config_path().to_path_buf();
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
    let app = router(server);
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

    #[test]
    fn guessing_is_throttled_and_the_right_password_still_works_after_the_window() {
        let hash = hash_secret("right").unwrap();
        let config = CheckedManagement {
            listen: "127.0.0.1:1".parse().unwrap(),
            username: Some("op".into()),
            password_hash: Some(hash),
            token_hash: None,
            tls: None,
        };
        let server = Server {
            managed: Arc::new(Nothing),
            config,
            verified: Mutex::default(),
            sessions: Mutex::default(),
            failures: Mutex::default(),
        };
        assert!(server.check_password("op", "right"));
        for guess in 0..MAX_FAILURES {
            assert!(!server.check_password("op", &format!("guess {guess}")));
        }
        assert!(server.throttled());
        // A credential verified before stays usable; a new one waits for the window to pass.
        assert!(server.check_password("op", "right"));
        if let Ok(mut failures) = server.failures.lock() {
            for t in failures.iter_mut() {
                *t -= FAILURE_WINDOW * 2;
            }
        }
        assert!(!server.throttled());
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

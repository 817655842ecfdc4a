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
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use connectors::config::{ConfigError, FieldError};

mod auth;
mod config;
mod metrics;
mod tls;

use auth::*;
pub use config::{check_section, hash_secret, CheckedManagement, ManagementConfig, Role, TokenConfig};
use metrics::*;
pub use metrics::{allow, labels, Family, LabelValues, Sample};
use tls::*;

/// What an HA command answered.
pub type HaFuture = Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send>>;

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
    let id = hex::encode(id);
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
        Err(error) => refuse(StatusCode::CONFLICT, &error.to_string()),
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
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
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
        Err(FieldError { field, reason }) => {
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
        tokio::task::spawn_blocking(move || crate::runtime::save_config(&path, &text)).await
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

/// Binds the management address and serves until `shutdown`. Binding errors are returned (a daemon
/// that cannot be managed should not start silently).
pub async fn spawn(
    config: CheckedManagement,
    managed: Arc<dyn Managed>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, crate::runtime::DaemonError> {
    use crate::runtime::DaemonError;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| DaemonError::io(format!("management: cannot listen on {}", config.listen), e))?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key).map_err(|e| DaemonError::part("management TLS", e))?),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::config::verify_secret;

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
        // All but the last failure are noted directly: twenty Argon2 checks in a debug build take
        // longer than the window itself, and the test is about counting, not hashing speed.
        for _ in 1..MAX_FAILURES {
            server.note_failure(guesser, "op");
        }
        assert_eq!(server.check_password(guesser, "op", "the last guess"), Err(Denied::Unauthorized));
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
            connectors::config::parse_toml::<ManagementConfig>(Path::new("n.toml"), text)
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

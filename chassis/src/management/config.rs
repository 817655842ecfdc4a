//! The `[management]` section and the secrets it stores (Argon2 hashes only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use connectors::config::{parse_addr, ConfigError};

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
/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("no random salt: {0}")]
    NoSalt(getrandom::Error),
    #[error("Argon2: {0}")]
    Argon2(argon2::password_hash::Error),
}

pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(HashError::NoSalt)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    argon2::Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(HashError::Argon2)
}

pub(super) fn verify_secret(secret: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
}

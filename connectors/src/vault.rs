//! The HTTP vault: uploads on BLUE, downloads on RED.
//!
//! BLUE (`upload_router`): `PUT /upload/<name>` with the file as the body, or `POST /upload` with a
//! multipart form (every part with a file name is one file). Each upload streams to the spool, is
//! synced to disk and only then answered `201` with its id, so a crash after the answer loses nothing.
//! Over the size limit the answer is `413` and nothing is kept; a refused name gets `400` with the
//! reason; a full disk `507`. `GET /uploads` lists what waits to be sent.
//!
//! RED (`download_router`): `GET /files` lists the delivered files (JSON), `GET /files/<path>`
//! downloads one (with `Range`, content length and type), `DELETE /files/<path>` removes one when the
//! channel allows it. Names starting with '.' (part files, the ledger) are never listed or served.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::names::sanitize;
use crate::spool::{Finish, Spool, SpoolEntry};

struct Upload {
    channel: u16,
    spool: Spool,
    max_file_size: u64,
}

/// Why an upload was not accepted, as an HTTP answer.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// The BLUE vault's routes for one channel.
pub fn upload_router(channel: u16, spool: Spool, max_file_size: u64) -> Router {
    let state = Arc::new(Upload { channel, spool, max_file_size });
    Router::new()
        .route("/upload/{*name}", put(put_upload))
        .route("/upload", post(post_upload))
        .route("/uploads", get(list_uploads))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn put_upload(
    State(state): State<Arc<Upload>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    match accept(&state, &name, peer, BodyChunks(&mut stream)).await {
        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

struct BodyChunks<'a>(&'a mut axum::body::BodyDataStream);

struct FieldChunks<'a, 'b>(&'a mut axum::extract::multipart::Field<'b>);

/// The pieces of one uploaded file, however the request carries them.
trait ChunkSource {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String>;
}

impl ChunkSource for BodyChunks<'_> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        use futures_util::StreamExt;
        match self.0.next().await {
            Some(Ok(bytes)) => Ok(Some(bytes)),
            Some(Err(error)) => Err(error.to_string()),
            None => Ok(None),
        }
    }
}

impl ChunkSource for FieldChunks<'_, '_> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        self.0.chunk().await.map_err(|e| e.to_string())
    }
}

async fn post_upload(
    State(state): State<Arc<Upload>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut form: Multipart,
) -> Response {
    let mut accepted = Vec::new();
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                let body = json!({"error": format!("bad multipart body: {error}"), "accepted": accepted});
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
        };
        let Some(name) = field.file_name().map(str::to_owned) else { continue };
        match accept(&state, &name, peer, FieldChunks(&mut field)).await {
            Ok(answer) => accepted.push(answer),
            Err(Refusal(status, error)) => {
                return (status, Json(json!({"error": error, "name": name, "accepted": accepted}))).into_response()
            }
        }
    }
    if accepted.is_empty() {
        return Refusal(StatusCode::BAD_REQUEST, "no file in the form (a part needs a filename)".into())
            .into_response();
    }
    (StatusCode::CREATED, Json(json!({"accepted": accepted}))).into_response()
}

/// Streams one upload to the spool, syncs it and commits it; only then is it accepted.
// The client's name is recorded once sanitised: raw, it could put control characters in the log.
#[tracing::instrument(name = "upload", skip_all, fields(channel = state.channel, name = tracing::field::Empty, %peer))]
async fn accept(
    state: &Upload,
    name: &str,
    peer: SocketAddr,
    mut chunks: impl ChunkSource,
) -> Result<serde_json::Value, Refusal> {
    let name = sanitize(name).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("name refused: {e}")))?;
    tracing::Span::current().record("name", name.as_text());
    let mut entry = SpoolEntry::new(name.as_text(), 0, None, peer.to_string(), Finish::Delete);
    let partial = state.spool.partial_path(&entry.id);
    let result = write_partial(&partial, &mut chunks, state.max_file_size).await;
    let (size, hash) = match result {
        Ok(done) => done,
        Err(refusal) => {
            let _ = tokio::fs::remove_file(&partial).await;
            warn!(reason = %refusal.1, "upload refused");
            return Err(refusal);
        }
    };
    entry.size = size;
    entry.blake3 = Some(hex::encode(hash.as_bytes()));
    entry.mtime =
        std::time::SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| (d.as_secs() as i64, d.subsec_nanos()));
    state.spool.replicate(&entry, &partial).await;
    let spool = state.spool.clone();
    let committed = entry.clone();
    let result = tokio::task::spawn_blocking(move || spool.commit(&committed)).await;
    if let Err(error) = result.map_err(std::io::Error::other).and_then(|r| r) {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(storage_refusal("cannot commit the upload", &error));
    }
    info!(id = %entry.id, size, "upload accepted for transfer");
    Ok(json!({
        "id": entry.id,
        "name": entry.name,
        "size": size,
        "blake3": entry.blake3,
        "state": "accepted for transfer",
    }))
}

async fn write_partial(
    path: &FsPath,
    chunks: &mut impl ChunkSource,
    limit: u64,
) -> Result<(u64, blake3::Hash), Refusal> {
    let mut file =
        tokio::fs::File::create(path).await.map_err(|e| storage_refusal("cannot create the spool file", &e))?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) =
        chunks.next_chunk().await.map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}")))?
    {
        size += chunk.len() as u64;
        if size > limit {
            return Err(Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the upload is over the channel's limit of {limit} bytes"),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| storage_refusal("cannot write the spool file", &e))?;
    }
    file.sync_all().await.map_err(|e| storage_refusal("cannot sync the spool file", &e))?;
    Ok((size, hasher.finalize()))
}

fn storage_refusal(what: &str, error: &std::io::Error) -> Refusal {
    let status = if error.kind() == std::io::ErrorKind::StorageFull {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Refusal(status, format!("{what}: {error}"))
}

async fn list_uploads(State(state): State<Arc<Upload>>) -> Response {
    let spool = state.spool.clone();
    let entries = tokio::task::spawn_blocking(move || spool.list()).await.unwrap_or_default();
    let waiting: Vec<_> = entries
        .iter()
        .map(|e| json!({"id": e.id, "name": e.name, "size": e.size, "accepted_ms": e.accepted_ms}))
        .collect();
    Json(json!({"waiting": waiting})).into_response()
}

struct Vault {
    folder: PathBuf,
    allow_delete: bool,
}

/// The RED vault's routes over an output folder.
pub fn download_router(folder: PathBuf, allow_delete: bool) -> Router {
    let state = Arc::new(Vault { folder, allow_delete });
    Router::new()
        .route("/files", get(list_files))
        .route("/files/{*path}", get(download).head(download).delete(delete_file))
        .with_state(state)
}

/// A delivered file's path from a request, or the answer that refuses it.
fn delivered_path(vault: &Vault, path: &str) -> Result<PathBuf, Refusal> {
    let safe = sanitize(path).map_err(|e| match e {
        // RED's own state lives under such names: it is not there for a client, not even refused.
        crate::names::NameError::Hidden { .. } => Refusal(StatusCode::NOT_FOUND, "no such file".into()),
        e => Refusal(StatusCode::BAD_REQUEST, format!("path refused: {e}")),
    })?;
    let full = vault.folder.join(safe.to_path());
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if meta.is_file() => Ok(full),
        _ => Err(Refusal(StatusCode::NOT_FOUND, "no such file".into())),
    }
}

async fn download(State(vault): State<Arc<Vault>>, Path(path): Path<String>, request: Request) -> Response {
    let full = match delivered_path(&vault, &path) {
        Ok(full) => full,
        Err(refusal) => return refusal.into_response(),
    };
    match tower_http::services::ServeFile::new(&full).oneshot(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            let file_name = full.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            download_headers(response.headers_mut(), &file_name);
            response
        }
        Err(error) => Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// A vault holds what anyone on BLUE uploaded: a browser must save it, never render it on this origin
/// (an uploaded HTML page would otherwise run as the vault's own site).
fn download_headers(headers: &mut axum::http::HeaderMap, file_name: &str) {
    use axum::http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    let ascii: String = file_name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = file_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
}

async fn delete_file(State(vault): State<Arc<Vault>>, Path(path): Path<String>) -> Response {
    if !vault.allow_delete {
        return Refusal(StatusCode::FORBIDDEN, "this vault does not allow deleting".into()).into_response();
    }
    let full = match delivered_path(&vault, &path) {
        Ok(full) => full,
        Err(refusal) => return refusal.into_response(),
    };
    match tokio::fs::remove_file(&full).await {
        Ok(()) => {
            info!(path = %path, "vault file deleted by a client");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn list_files(State(vault): State<Arc<Vault>>) -> Response {
    let folder = vault.folder.clone();
    let files = tokio::task::spawn_blocking(move || list_delivered(&folder)).await.unwrap_or_default();
    Json(json!({"files": files})).into_response()
}

fn list_delivered(folder: &FsPath) -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(items) = std::fs::read_dir(&dir) else { continue };
        for item in items.flatten() {
            if item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(kind) = item.file_type() else { continue };
            if kind.is_dir() {
                stack.push(item.path());
            } else if kind.is_file() {
                let Ok(meta) = item.metadata() else { continue };
                let Ok(relative) = item.path().strip_prefix(folder).map(|p| p.to_string_lossy().to_string()) else {
                    continue;
                };
                let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
                files.push(json!({"path": relative, "size": meta.len(), "mtime": mtime}));
            }
        }
    }
    files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    files
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

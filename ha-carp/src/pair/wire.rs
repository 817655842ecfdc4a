//! The pair channel's framing and keys: the tagged hello, the per-connection direction keys, and
//! frames of `u32 length | payload | 16-byte tag` (see the module above for why).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::messages::PairMessage;

/// File content per data frame.
pub const CHUNK: usize = 256 * 1024;
/// Largest frame accepted: a chunk, or a ledger snapshot of a few thousand entries.
pub const MAX_FRAME: usize = 8 << 20;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 16;
/// How often the active says it is alive; the standby counts the link lost after three missed.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
const PROTOCOL_VERSION: u32 = 1;
/// The pair's key, derived from the security text (never the text itself on the wire).
#[derive(Clone)]
pub struct PairKey([u8; 32]);

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairKey(..)")
    }
}

impl PairKey {
    pub fn from_security_text(text: &str) -> PairKey {
        PairKey(blake3::derive_key("diode pair channel v1 key", text.as_bytes()))
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }
}

/// What each end says first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub node: String,
    /// "blue" or "red": a BLUE never pairs with a RED.
    pub side: String,
    /// Hex of 16 random bytes, fresh per connection.
    pub nonce: String,
}

impl Hello {
    pub fn new(node: &str, side: &str) -> Hello {
        let mut nonce = [0u8; NONCE_LEN];
        if getrandom::fill(&mut nonce).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            nonce.copy_from_slice(&now.to_le_bytes());
        }
        Hello { version: PROTOCOL_VERSION, node: node.into(), side: side.into(), nonce: hex::encode(nonce) }
    }
}

/// One received frame.
#[derive(Debug)]
pub enum Frame {
    Message(PairMessage),
    Data(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("the peer's tag does not match: not our pair, or altered, replayed or reordered")]
    BadTag,
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("hello refused: {0}")]
    BadHello(String),
    #[error("message not understood: {0}")]
    BadMessage(String),
    #[error("connection closed")]
    Closed,
    #[error("the standby already serves as many connections as it takes")]
    TooManyConnections,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

diode_proto::reasons!(PairError patterns {
    PairError::BadTag => "bad_tag",
    PairError::TooLong(_) => "too_long",
    PairError::BadHello(_) => "bad_hello",
    PairError::BadMessage(_) => "bad_message",
    PairError::Closed => "closed",
    PairError::TooManyConnections => "too_many_connections",
    PairError::Io(_) => "io",
});

impl PairError {
    /// Whether this was the peer misbehaving (counted as a refusal) rather than the network.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PairError::BadTag | PairError::TooLong(_) | PairError::BadHello(_) | PairError::BadMessage(_))
    }
}

pub struct PairReader {
    stream: OwnedReadHalf,
    key: PairKey,
    seq: u64,
}

pub struct PairWriter {
    pub(super) stream: OwnedWriteHalf,
    key: PairKey,
    pub(super) seq: u64,
}

impl PairWriter {
    async fn send_raw(&mut self, kind: u8, body: &[u8]) -> Result<(), PairError> {
        let len = 1 + body.len() + TAG_LEN;
        if len > MAX_FRAME {
            return Err(PairError::TooLong(len));
        }
        let tag = self.key.tag(&[&self.seq.to_le_bytes(), &[kind], body]);
        self.seq += 1;
        let mut frame = Vec::with_capacity(4 + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(body);
        frame.extend_from_slice(&tag[..TAG_LEN]);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    pub async fn send(&mut self, message: &PairMessage) -> Result<(), PairError> {
        let body = serde_json::to_vec(message).map_err(|e| PairError::BadMessage(e.to_string()))?;
        self.send_raw(b'J', &body).await
    }

    pub async fn send_data(&mut self, data: &[u8]) -> Result<(), PairError> {
        self.send_raw(b'D', data).await
    }
}

impl PairReader {
    pub async fn recv(&mut self) -> Result<Frame, PairError> {
        let mut length = [0u8; 4];
        match self.stream.read_exact(&mut length).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(PairError::Closed),
            Err(error) => return Err(error.into()),
        }
        let len = u32::from_be_bytes(length) as usize;
        if len > MAX_FRAME {
            return Err(PairError::TooLong(len));
        }
        if len < 1 + TAG_LEN {
            return Err(PairError::BadTag);
        }
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).await?;
        let (content, tag) = frame.split_at(len - TAG_LEN);
        let expected = self.key.tag(&[&self.seq.to_le_bytes(), content]);
        if !constant_time_eq(&expected[..TAG_LEN], tag) {
            return Err(PairError::BadTag);
        }
        self.seq += 1;
        match content[0] {
            b'J' => serde_json::from_slice(&content[1..])
                .map(Frame::Message)
                .map_err(|e| PairError::BadMessage(e.to_string())),
            b'D' => Ok(Frame::Data(content[1..].to_vec())),
            other => Err(PairError::BadMessage(format!("frame type {other}"))),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// Exchanges hellos on a fresh connection and derives the connection's keys. `initiator` is the end
/// that connected (the active).
pub async fn handshake(
    stream: TcpStream,
    key: &PairKey,
    me: &Hello,
    initiator: bool,
) -> Result<(Hello, PairReader, PairWriter), PairError> {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let body = serde_json::to_vec(me).map_err(|e| PairError::BadMessage(e.to_string()))?;
    let tag = key.tag(&[b"hello", &body]);
    let mut frame = Vec::with_capacity(4 + body.len() + TAG_LEN);
    frame.extend_from_slice(&((body.len() + TAG_LEN) as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&tag[..TAG_LEN]);
    write.write_all(&frame).await?;

    let mut length = [0u8; 4];
    let read_hello = async {
        read.read_exact(&mut length).await?;
        let len = u32::from_be_bytes(length) as usize;
        if !(TAG_LEN + 2..=4096).contains(&len) {
            return Err(PairError::BadHello(format!("a hello of {len} bytes")));
        }
        let mut frame = vec![0u8; len];
        read.read_exact(&mut frame).await?;
        Ok::<_, PairError>(frame)
    };
    let frame = tokio::time::timeout(Duration::from_secs(5), read_hello)
        .await
        .map_err(|_| PairError::BadHello("no hello within 5 s".into()))??;
    let (body, tag) = frame.split_at(frame.len() - TAG_LEN);
    if !constant_time_eq(&key.tag(&[b"hello", body])[..TAG_LEN], tag) {
        return Err(PairError::BadTag);
    }
    let peer: Hello = serde_json::from_slice(body).map_err(|e| PairError::BadHello(e.to_string()))?;
    if peer.version != PROTOCOL_VERSION {
        return Err(PairError::BadHello(format!(
            "protocol version {}, this node speaks {PROTOCOL_VERSION}",
            peer.version
        )));
    }
    if peer.side != me.side {
        return Err(PairError::BadHello(format!("the peer is a {} node, this one is {}", peer.side, me.side)));
    }
    if peer.nonce == me.nonce {
        return Err(PairError::BadHello("the peer echoed this node's nonce".into()));
    }
    let (active_nonce, standby_nonce) = if initiator { (&me.nonce, &peer.nonce) } else { (&peer.nonce, &me.nonce) };
    let session = key.tag(&[b"session", active_nonce.as_bytes(), standby_nonce.as_bytes()]);
    let direction = |label: &[u8]| PairKey(PairKey(session).tag(&[label]));
    let (push, answer) = (direction(b"active to standby"), direction(b"standby to active"));
    let (read_key, write_key) = if initiator { (answer, push) } else { (push, answer) };
    Ok((peer, PairReader { stream: read, key: read_key, seq: 0 }, PairWriter { stream: write, key: write_key, seq: 0 }))
}

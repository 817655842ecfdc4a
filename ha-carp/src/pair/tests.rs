//! The pair channel end to end on loopback: handshake, framing, refusals, replication.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

async fn connected(
    active_key: &str,
    standby_key: &str,
) -> Result<((PairReader, PairWriter), (PairReader, PairWriter)), PairError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let standby_key = PairKey::from_security_text(standby_key);
    let standby = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        handshake(stream, &standby_key, &Hello::new("b2", "blue"), false).await
    });
    let stream = TcpStream::connect(addr).await?;
    let active = handshake(stream, &PairKey::from_security_text(active_key), &Hello::new("b1", "blue"), true).await;
    let standby = standby.await.map_err(|e| PairError::BadMessage(e.to_string()))?;
    let (_, ar, aw) = active?;
    let (_, sr, sw) = standby?;
    Ok(((ar, aw), (sr, sw)))
}

#[tokio::test]
async fn messages_and_data_cross_both_ways() {
    let ((mut ar, mut aw), (mut sr, mut sw)) = connected("pair-secret", "pair-secret").await.unwrap();
    let message = PairMessage::Sent { channel: 3, id: "ab".into() };
    aw.send(&message).await.unwrap();
    aw.send_data(b"content").await.unwrap();
    assert!(matches!(sr.recv().await.unwrap(), Frame::Message(m) if m == message));
    assert!(matches!(sr.recv().await.unwrap(), Frame::Data(d) if d == b"content"));
    let ack = PairMessage::Ack { request: 1, ok: true, reason: None };
    sw.send(&ack).await.unwrap();
    assert!(matches!(ar.recv().await.unwrap(), Frame::Message(m) if m == ack));
}

#[tokio::test]
async fn a_wrong_security_text_is_refused_at_the_hello() {
    let result = connected("pair-secret", "other-secret").await;
    assert!(matches!(result, Err(PairError::BadTag)), "{:?}", result.err());
}

#[tokio::test]
async fn an_altered_or_replayed_frame_is_refused() {
    // Frames are written by hand here: a tag over the wrong sequence number is a replay.
    let ((_ar, mut aw), (mut sr, _sw)) = connected("pair-secret", "pair-secret").await.unwrap();
    let message = PairMessage::Sent { channel: 1, id: "x".into() };
    aw.send(&message).await.unwrap();
    assert!(matches!(sr.recv().await.unwrap(), Frame::Message(_)));
    aw.seq = 0; // the same frame again
    aw.send(&message).await.unwrap();
    assert!(matches!(sr.recv().await, Err(PairError::BadTag)));

    let ((_ar, mut aw), (mut sr, _sw)) = connected("pair-secret", "pair-secret").await.unwrap();
    let mut frame = vec![0, 0, 0, 20, b'D'];
    frame.extend_from_slice(&[7u8; 19]);
    aw.stream.write_all(&frame).await.unwrap();
    assert!(matches!(sr.recv().await, Err(PairError::BadTag)));
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_before_it_is_read() {
    let ((_ar, mut aw), (mut sr, _sw)) = connected("pair-secret", "pair-secret").await.unwrap();
    aw.stream.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
    assert!(matches!(sr.recv().await, Err(PairError::TooLong(_))));
}

#[test]
fn an_active_is_exposed_for_the_resend_window_after_sending_a_file_without_copy() {
    let stats = PairStats::default();
    assert!(!stats.exposed());
    stats.expose(Duration::from_secs(30));
    assert!(stats.exposed());
    // A shorter exposure never shortens a longer one.
    stats.expose(Duration::ZERO);
    assert!(stats.exposed());
    let expired = PairStats::default();
    expired.expose(Duration::ZERO);
    assert!(!expired.exposed());
    // A heartbeat from a peer that predates the flag reads as not exposed.
    let old: PairMessage = serde_json::from_str(r#"{"type":"heartbeat","synced":true}"#).unwrap();
    assert!(matches!(old, PairMessage::Heartbeat { synced: true, exposed: false }));
}

#[test]
fn check_names_the_field() {
    let config = PairConfig {
        listen: "127.0.0.1:7000".into(),
        peer: "127.0.0.1:7000".into(),
        ack_timeout_ms: 2000,
        resend_window_s: None,
        shadow_files: None,
    };
    assert_eq!(config.check("blue", "x").unwrap_err().field, "pair.peer");
    let config = PairConfig { peer: "127.0.0.2:7000".into(), shadow_files: Some(5), ..config };
    assert_eq!(config.check("blue", "x").unwrap_err().field, "pair.shadow_files");
    assert!(config.check("red", "x").is_ok());
    assert_eq!(config.check("red", "").unwrap_err().field, "ha.security_text");
}

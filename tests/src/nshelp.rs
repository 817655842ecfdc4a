//! Small helpers the HA lab runs inside namespaces (`diode-lab ns-sink`, `ns-send`, `ns-advert`):
//! a destination that records what it receives, a client that sends one stream through the VIP, and
//! an advert injector for the authentication scenarios.

use crate::error::{IoContext, LabError, LabResult};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::lab::{send_stream, TcpSink};

/// Runs a TCP sink on `listen` and rewrites `out` with its records every 100 ms, until killed.
pub fn sink(listen: SocketAddr, out: &Path) -> LabResult<()> {
    let sink = TcpSink::start(listen)?;
    loop {
        let records: Vec<serde_json::Value> = sink
            .received
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|s| s.len > 0)
                    .map(|s| serde_json::json!({"id": s.id, "len": s.len, "hash": hex::encode(s.hash), "clean": s.clean}))
                    .collect()
            })
            .unwrap_or_default();
        let temporary = out.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec(&records).unwrap_or_default())
            .doing(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, out).doing(|| format!("renaming to {}", out.display()))?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends stream `id` of `bytes` to `to`, retrying the connection until `timeout`. Prints one JSON
/// object: how long until the connection was accepted, and the stream's length and hash.
pub fn send(to: SocketAddr, id: u64, bytes: usize, timeout: Duration) -> LabResult<()> {
    let start = Instant::now();
    loop {
        match send_stream(to, id, bytes) {
            Ok((len, hash)) => {
                println!(
                    "{}",
                    serde_json::json!({"accepted_after_ms": start.elapsed().as_millis() as u64, "len": len, "hash": hex::encode(hash)})
                );
                return Ok(());
            }
            Err(error) if start.elapsed() >= timeout => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `count` CARP adverts for `vhid`/`vip` from this namespace: with `key` (a wrong security
/// text), or, with `replay`, re-sending the first real advert heard on the group.
pub fn advert(
    source: Ipv4Addr,
    vhid: u8,
    vip: Ipv4Addr,
    key: Option<&str>,
    replay: bool,
    count: u32,
    ttl: u32,
) -> LabResult<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).at("opening a raw VRRP socket")?;
    let group = Ipv4Addr::new(224, 0, 0, 18);
    socket.join_multicast_v4(&group, &source).doing(|| format!("joining {group}"))?;
    socket.set_multicast_if_v4(&source).at("setting the multicast interface")?;
    socket.set_multicast_ttl_v4(ttl).at("setting the multicast TTL")?;
    socket.set_read_timeout(Some(Duration::from_secs(3))).at("setting the read timeout")?;
    let bytes: Vec<u8> = if replay {
        let mut buffer = [0u8; 256];
        let len = std::io::Read::read(&mut &socket, &mut buffer).at("no advert heard to replay")?;
        let header = usize::from(buffer[0] & 0x0f) * 4;
        buffer[header..len].to_vec()
    } else {
        let key = ha_carp::advert::AdvertKey::new(key.unwrap_or("wrong").as_bytes(), vhid, vip.octets())
            .map_err(|e| LabError::unexpected(format!("advert key: {e}")))?;
        // The most attractive advert possible: if it were accepted it would win every election.
        ha_carp::advert::Advert { vhid, advbase: 0, advskew: 1, demote: 0, counter: u64::MAX / 2 }.emit(&key).to_vec()
    };
    let target = SocketAddr::from((group, 0));
    for _ in 0..count {
        socket.send_to(&bytes, &target.into()).doing(|| format!("sending the advert to {target}"))?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

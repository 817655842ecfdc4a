//! Destination pools: the servers a RED channel delivers to, with health checks.
//!
//! A destination is up until `failures` consecutive checks fail, and up again after one success. A
//! failed connection counts as a failed check, so a server that dies between checks is passed over at
//! once. `failover` picks the first healthy destination in configured order; `balanced` spreads
//! streams over the healthy ones by weight (smooth weighted round robin).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{HealthConfig, HealthKind, PoolMode};

struct Member {
    addr: SocketAddr,
    weight: u32,
    up: AtomicBool,
    failures: AtomicU32,
    last_check: Mutex<String>,
}

/// What the status page shows of a destination.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DestinationStatus {
    pub address: String,
    pub up: bool,
    pub last_check: String,
}

pub struct Pool {
    channel: u16,
    mode: PoolMode,
    health: HealthConfig,
    members: Vec<Member>,
    /// Smooth weighted round robin state (balanced mode).
    current: Mutex<Vec<i64>>,
}

impl Pool {
    pub fn new(channel: u16, destinations: &[(SocketAddr, u32)], mode: PoolMode, health: HealthConfig) -> Arc<Pool> {
        let members = destinations
            .iter()
            .map(|(addr, weight)| Member {
                addr: *addr,
                weight: *weight,
                up: AtomicBool::new(true),
                failures: AtomicU32::new(0),
                last_check: Mutex::new("not checked yet".into()),
            })
            .collect::<Vec<_>>();
        let current = Mutex::new(vec![0; members.len()]);
        Arc::new(Pool { channel, mode, health, members, current })
    }

    pub fn any_up(&self) -> bool {
        self.members.iter().any(|m| m.up.load(Ordering::SeqCst))
    }

    /// A healthy destination, or `None` when every one is down.
    pub fn pick(&self) -> Option<SocketAddr> {
        self.pick_excluding(&[])
    }

    /// A healthy destination not in `tried`.
    pub fn pick_excluding(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let usable = |m: &Member| m.up.load(Ordering::SeqCst) && !tried.contains(&m.addr);
        match self.mode {
            PoolMode::Failover => self.members.iter().find(|m| usable(m)).map(|m| m.addr),
            PoolMode::Balanced => {
                let Ok(mut current) = self.current.lock() else { return None };
                let total: i64 = self.members.iter().filter(|m| usable(m)).map(|m| i64::from(m.weight)).sum();
                let mut best: Option<usize> = None;
                for (index, member) in self.members.iter().enumerate() {
                    if !usable(member) {
                        continue;
                    }
                    current[index] += i64::from(member.weight);
                    if best.is_none_or(|b| current[index] > current[b]) {
                        best = Some(index);
                    }
                }
                let chosen = best?;
                current[chosen] -= total;
                Some(self.members[chosen].addr)
            }
        }
    }

    fn record(&self, member: &Member, ok: bool, detail: String) {
        if let Ok(mut last) = member.last_check.lock() {
            last.clone_from(&detail);
        }
        if ok {
            member.failures.store(0, Ordering::SeqCst);
            if !member.up.swap(true, Ordering::SeqCst) {
                info!(destination = %member.addr, "destination up");
            }
        } else {
            let failures = member.failures.fetch_add(1, Ordering::SeqCst) + 1;
            if failures >= self.health.failures && member.up.swap(false, Ordering::SeqCst) {
                warn!(destination = %member.addr, reason = %detail, "destination down");
                if !self.any_up() {
                    warn!("no destination up: streams of this channel are aborted until one returns");
                }
            }
        }
    }

    /// A connection to `addr` failed: it counts as failed checks up to the down threshold, so the
    /// next stream goes elsewhere without waiting for the health timer.
    pub fn report_failure(&self, addr: SocketAddr, detail: &str) {
        if let Some(member) = self.members.iter().find(|m| m.addr == addr) {
            for _ in 0..self.health.failures {
                self.record(member, false, format!("connection failed: {detail}"));
            }
        }
    }

    pub fn status(&self) -> Vec<DestinationStatus> {
        self.members
            .iter()
            .map(|m| DestinationStatus {
                address: m.addr.to_string(),
                up: m.up.load(Ordering::SeqCst),
                last_check: m.last_check.lock().map(|s| s.clone()).unwrap_or_default(),
            })
            .collect()
    }

    /// Checks every destination each interval until `shutdown`.
    #[tracing::instrument(name = "channel", skip_all, fields(number = self.channel))]
    pub async fn run_health_checks(self: Arc<Pool>, mut shutdown: watch::Receiver<bool>) {
        if self.health.kind == HealthKind::None {
            return;
        }
        loop {
            for member in &self.members {
                let (ok, detail) = check(&self.health, member.addr).await;
                self.record(member, ok, detail);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.health.interval()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn check(health: &HealthConfig, addr: SocketAddr) -> (bool, String) {
    let target = SocketAddr::new(addr.ip(), health.port.unwrap_or(addr.port()));
    let attempt = async {
        let mut stream = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
        if health.kind != HealthKind::Http {
            return Ok("connect ok".to_string());
        }
        let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", health.path, target);
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("send request: {e}"))?;
        let mut response = Vec::new();
        let mut limited = (&mut stream).take(64 * 1024);
        limited.read_to_end(&mut response).await.map_err(|e| format!("read response: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let status: Option<u16> = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if status != Some(health.expect_status) {
            return Err(format!("GET {} answered {:?}, expected {}", health.path, status, health.expect_status));
        }
        if let Some(expected) = &health.expect_body {
            let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            if !body.contains(expected.as_str()) {
                return Err(format!("GET {} body lacks '{expected}'", health.path));
            }
        }
        Ok(format!("GET {} answered {}", health.path, health.expect_status))
    };
    match tokio::time::timeout(health.timeout(), attempt).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
        Err(_) => (false, format!("no answer within {} ms", health.timeout_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn failover_takes_the_first_healthy_in_order() {
        let pool = Pool::new(1, &[(addr(1), 1), (addr(2), 1)], PoolMode::Failover, HealthConfig::default());
        assert_eq!(pool.pick(), Some(addr(1)));
        pool.report_failure(addr(1), "refused");
        assert_eq!(pool.pick(), Some(addr(2)));
        pool.report_failure(addr(2), "refused");
        assert_eq!(pool.pick(), None);
        pool.record(&pool.members[0], true, "connect ok".into());
        assert_eq!(pool.pick(), Some(addr(1)));
    }

    #[test]
    fn balanced_spreads_by_weight_over_healthy_members() {
        let pool = Pool::new(1, &[(addr(1), 3), (addr(2), 1)], PoolMode::Balanced, HealthConfig::default());
        let picks: Vec<_> = (0..8).filter_map(|_| pool.pick()).collect();
        assert_eq!(picks.iter().filter(|a| **a == addr(1)).count(), 6);
        assert_eq!(picks.iter().filter(|a| **a == addr(2)).count(), 2);
        pool.report_failure(addr(1), "refused");
        assert!((0..4).all(|_| pool.pick() == Some(addr(2))));
    }

    #[test]
    fn one_failed_check_is_not_enough_to_mark_down() {
        let pool =
            Pool::new(1, &[(addr(1), 1)], PoolMode::Failover, HealthConfig { failures: 2, ..HealthConfig::default() });
        pool.record(&pool.members[0], false, "timeout".into());
        assert!(pool.any_up());
        pool.record(&pool.members[0], false, "timeout".into());
        assert!(!pool.any_up());
        assert_eq!(pool.status()[0].last_check, "timeout");
    }
}

#[cfg(test)]
mod http_tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-shot HTTP server answering every request with `response`.
    fn serve(response: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let mut connection = connection;
                let mut request = [0u8; 1024];
                let _ = connection.read(&mut request);
                let _ = connection.write_all(response.as_bytes());
            }
        });
        addr
    }

    fn http(path: &str, status: u16, body: Option<&str>) -> HealthConfig {
        HealthConfig {
            kind: HealthKind::Http,
            path: path.into(),
            expect_status: status,
            expect_body: body.map(str::to_string),
            timeout_ms: 2000,
            ..HealthConfig::default()
        }
    }

    #[tokio::test]
    async fn http_check_wants_the_status_and_the_body_text() {
        let healthy = serve("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nstatus: healthy\n");
        assert!(check(&http("/health", 200, Some("healthy")), healthy).await.0);
        let (ok, detail) = check(&http("/health", 200, Some("ready")), healthy).await;
        assert!(!ok && detail.contains("lacks 'ready'"), "{detail}");
        let failing = serve("HTTP/1.0 503 Service Unavailable\r\n\r\n");
        let (ok, detail) = check(&http("/health", 200, None), failing).await;
        assert!(!ok && detail.contains("Some(503)"), "{detail}");
    }

    #[tokio::test]
    async fn tcp_check_fails_on_a_closed_port() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let (ok, detail) = check(&HealthConfig { timeout_ms: 500, ..HealthConfig::default() }, closed).await;
        assert!(!ok && detail.starts_with("connect"), "{detail}");
    }
}

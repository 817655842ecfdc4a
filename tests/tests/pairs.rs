//! Zero-loss failover on the full pair-of-pairs (loopback, real processes): kill -9 of either side's
//! active node under load loses and duplicates no file; the configuration replicates to the standby
//! at once, local settings excepted; the pair channel refuses strangers; a pair whose standby is gone
//! says it is not redundant.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tests::failover::{run, FailoverOptions};
use tests::http::{basic_auth, request, Answer};
use tests::lab::{loopback_net, wait_for};
use tests::pairs::{PairsLab, PairsOptions, SECURITY_TEXT};

#[test]
fn killing_either_active_node_loses_and_duplicates_no_file() {
    for side in ["blue", "red"] {
        let options = FailoverOptions { side: side.into(), trials: 5, ..FailoverOptions::default() };
        let report = run(&options).unwrap();
        eprintln!("{side}: {report:?}");
        assert_eq!(report.trials, 5);
        assert!(report.files_sent > 50, "{side}: too little load to mean anything: {report:?}");
        assert_eq!(report.files_lost, 0, "{side}: {:?}", report.lost_names);
        assert_eq!(report.files_duplicated, 0, "{side}: {:?}", report.duplicated_names);
        assert_eq!(report.tcp_false_complete, 0, "{side}: a cut stream must never end cleanly");
        assert!(report.ok);
    }
}

fn get(lab: &PairsLab, api: SocketAddr, path: &str) -> tests::error::LabResult<Answer> {
    let (user, password) = lab.credentials.clone().unwrap();
    request(api, "GET", path, &[("Authorization", &basic_auth(&user, &password))], b"")
}

fn exported(lab: &PairsLab, api: SocketAddr) -> Option<toml::Table> {
    let answer = get(lab, api, "/api/v1/config/export").ok().filter(|a| a.status == 200)?;
    String::from_utf8(answer.body).ok()?.parse().ok()
}

/// The `diode_pair_redundant` gauge of a node's metrics.
fn pair_redundant(lab: &PairsLab, api: SocketAddr) -> Option<f64> {
    let metrics = String::from_utf8(get(lab, api, "/metrics").ok()?.body).ok()?;
    let line = metrics.lines().find(|l| l.starts_with("diode_pair_redundant{"))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[test]
fn configuration_replicates_at_once_and_local_settings_stay() {
    let lab = PairsLab::start(loopback_net(), &PairsOptions { management: true, ..PairsOptions::default() }).unwrap();
    let (active, standby) = (lab.active("blue").unwrap(), 1 - lab.active("blue").unwrap());
    let active_api = lab.blues[active].management.unwrap();
    let standby_api = lab.blues[standby].management.unwrap();
    let before = exported(&lab, standby_api).unwrap();

    // A new configuration for the active: shared settings changed, and local ones too (which must
    // stay on the active only).
    let text = String::from_utf8(get(&lab, active_api, "/api/v1/config/export").unwrap().body).unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    config["link"].as_table_mut().unwrap().insert("rate_mbps".into(), toml::Value::Float(800.0));
    let uploads = config["channel"].as_array_mut().unwrap().iter_mut().find(|c| c["number"].as_integer() == Some(4));
    uploads.unwrap().as_table_mut().unwrap().insert("max_file_size".into(), toml::Value::Integer(12_345));
    config["node"].as_table_mut().unwrap().insert("name".into(), toml::Value::String("renamed-active".into()));
    config["ha"].as_table_mut().unwrap().insert("skew".into(), toml::Value::Integer(7));
    let (user, password) = lab.credentials.clone().unwrap();
    let auth = basic_auth(&user, &password);
    let imported = toml::to_string(&config).unwrap();
    let answer = request(
        active_api,
        "POST",
        "/api/v1/config/import",
        &[("Authorization", &auth), ("Content-Type", "application/toml")],
        imported.as_bytes(),
    );
    let answer = answer.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["replicated_to_standby"], true);
    let pushed = Instant::now();

    // The standby saves it and starts again with it; its API answers from the new configuration.
    let mut seen = None;
    assert!(wait_for(Duration::from_secs(10), || {
        seen = exported(&lab, standby_api);
        seen.as_ref().is_some_and(|c| c["link"]["rate_mbps"].as_float() == Some(800.0))
    }));
    let shown_after = pushed.elapsed();
    eprintln!("replicated configuration shown on the standby after {shown_after:?}");
    assert!(shown_after <= Duration::from_secs(1), "took {shown_after:?}");
    let after = seen.unwrap();
    let channel = |c: &toml::Table, n: i64| {
        c["channel"].as_array().unwrap().iter().find(|x| x["number"].as_integer() == Some(n)).unwrap().clone()
    };
    assert_eq!(channel(&after, 4)["max_file_size"].as_integer(), Some(12_345));
    // Local settings: the standby's own, untouched.
    for section in ["node", "ha", "management", "fiber", "pair"] {
        assert_eq!(after[section], before[section], "[{section}] must not be replicated");
    }
    for number in [3, 4] {
        assert_eq!(channel(&after, number)["spool"], channel(&before, number)["spool"], "channel {number}: spool");
    }
    assert_eq!(after["node"]["name"].as_str(), Some(lab.blues[standby].name.as_str()));
    // It runs the new configuration, without a restart by anyone, and is still the standby.
    assert!(wait_for(Duration::from_secs(10), || get(&lab, standby_api, "/api/v1/status")
        .is_ok_and(|a| a.json()["fibers"][0]["rate_mbps"].as_f64() == Some(800.0))));
    let standby_status = get(&lab, standby_api, "/api/v1/status").unwrap().json();
    assert_eq!(standby_status["role"], "standby", "{standby_status}");
    assert_eq!(standby_status["node"], lab.blues[standby].name.as_str());

    // The pair channel refuses a stranger and counts it.
    let standby_pair: SocketAddr = {
        let own: toml::Table = std::fs::read_to_string(&lab.blues[standby].config).unwrap().parse().unwrap();
        own["pair"]["listen"].as_str().unwrap().parse().unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let refused = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(standby_pair).await.unwrap();
        let key = ha_carp::pair::PairKey::from_security_text("not-the-secret");
        let hello = ha_carp::pair::Hello::new("stranger", "blue");
        ha_carp::pair::handshake(stream, &key, &hello, true).await.err()
    });
    assert!(refused.is_some(), "a wrong security text must be refused");
    assert_ne!(SECURITY_TEXT, "not-the-secret");
    assert!(wait_for(Duration::from_secs(5), || {
        get(&lab, standby_api, "/api/v1/status")
            .is_ok_and(|a| a.json()["pair"]["refused"]["bad_tag"].as_u64() >= Some(1))
    }));

    // Without its standby the active says it is not redundant, in its status and its metrics.
    let mut lab = lab;
    lab.blues[standby].kill();
    assert!(wait_for(Duration::from_secs(10), || {
        get(&lab, active_api, "/api/v1/status").is_ok_and(|a| a.json()["redundancy"]["state"] == "not redundant")
    }));
    let status = get(&lab, active_api, "/api/v1/status").unwrap().json();
    eprintln!("without the standby: {}", status["redundancy"]);
    assert!(status["redundancy"]["reason"].as_str().unwrap().contains("pair channel"));
    assert_eq!(pair_redundant(&lab, active_api), Some(0.0));
    lab.blues[standby].start().unwrap();
    assert!(lab.wait_redundant("blue", Duration::from_secs(30)), "{}", lab.logs());
    assert!(wait_for(Duration::from_secs(5), || pair_redundant(&lab, active_api) == Some(1.0)));
    lab.stop();
}

/// Writes a file into the drop folder under a dot name (skipped by the scanner) and renames it, as a
/// careful producer does; returns its content's length and hash.
fn drop_file(lab: &PairsLab, name: &str, len: usize, seed: u64) -> (u64, [u8; 32]) {
    let content = tests::folders::file_content(seed, len);
    let hidden = lab.drop_folder.join(format!(".{name}"));
    std::fs::write(&hidden, &content).unwrap();
    std::fs::rename(&hidden, lab.drop_folder.join(name)).unwrap();
    (content.len() as u64, *blake3::hash(&content).as_bytes())
}

#[test]
fn a_returning_blue_takes_the_vip_back_only_with_its_peers_files() {
    // A slow link, so the node that took over still holds a backlog when the preferred one returns.
    let link = tests::lab::LinkPlan { rate_mbps: 40.0, repair_percent: 10.0, ..tests::lab::LinkPlan::default() };
    let options = PairsOptions { blue_preempt: true, link, ..PairsOptions::default() };
    let mut lab = PairsLab::start(loopback_net(), &options).unwrap();
    assert_eq!(lab.active("blue"), Some(0));
    lab.blues[0].kill();
    assert!(lab.wait_active("blue", 1, Duration::from_secs(10)), "{}", lab.logs());

    // While blue1 is away, blue2 accepts files it cannot send at once (about 2 s at 40 Mbit/s).
    let expected: std::collections::BTreeMap<String, (u64, [u8; 32])> = (0..40)
        .map(|n| (format!("backlog-{n:02}.bin"), drop_file(&lab, &format!("backlog-{n:02}.bin"), 256 << 10, n)))
        .collect();
    assert!(
        wait_for(Duration::from_secs(10), || tests::folders::visible_paths(&lab.drop_folder).is_empty()),
        "blue2 did not take the dropped files\n{}",
        lab.logs()
    );

    // blue1 returns: it preempts, but only once its pair channel has brought blue2's spool and the
    // files blue2 sent without a copy on blue1 are past the resend window (30 s).
    let log = lab.blues[0].config.with_extension("log");
    let before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
    lab.blues[0].start().unwrap();
    let restarted = Instant::now();
    assert!(lab.wait_active("blue", 0, Duration::from_secs(90)), "blue1 did not take the VIP back\n{}", lab.logs());
    eprintln!("blue1 took the VIP back {} ms after it started again", restarted.elapsed().as_millis());
    let since_restart = std::fs::read_to_string(&log).unwrap()[before..].to_string();
    let released = since_restart.find("preemption released");
    let active = since_restart.find("became ACTIVE");
    assert!(
        released.is_some() && released < active,
        "blue1 must be in sync before it takes the VIP back:\n{since_restart}"
    );

    // Every file arrives exactly once, whole, though the node that accepted them lost the VIP.
    let delivered = || {
        let mut all: Vec<(String, (u64, [u8; 32]))> = Vec::new();
        for folder in &lab.red_files {
            all.extend(tests::folders::visible_hashes(folder));
        }
        all
    };
    let complete = wait_for(Duration::from_secs(60), || delivered().len() >= expected.len());
    std::thread::sleep(Duration::from_secs(1));
    let all = delivered();
    let mut seen = std::collections::BTreeMap::new();
    for (name, content) in &all {
        assert!(seen.insert(name.clone(), *content).is_none(), "{name} delivered twice");
    }
    assert!(complete, "{} of {} files delivered\n{}", seen.len(), expected.len(), lab.logs());
    assert_eq!(seen, expected, "every file whole, none extra");
    lab.stop();
}

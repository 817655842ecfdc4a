//! The attacks of the security review, replayed against real processes. Each test does what the
//! attacker did and asserts what must hold now.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tests::http::request;
use tests::lab::{free_port, loopback_net, wait_for, ChannelPlan, Lab, LinkPlan, TempDir};
use tests::rawwire::{LoneRed, RawSender};

fn vault_section(out: &Path, download: SocketAddr) -> String {
    format!(
        "[[channel]]\nnumber = 2\nkind = \"vault\"\nname = \"vault\"\nfolder = \"{}\"\nlisten = \"{download}\"\n",
        out.display()
    )
}

fn failed(status: &serde_json::Value, label: &str) -> u64 {
    status["channels"][0]["files"]["failed"][label].as_u64().unwrap_or(0)
}

/// Item 1: a file named to land in RED's `.part/` as a delivery announcement that names a file
/// elsewhere. Sent straight to the fibers (as a BLUE that did not refuse it would), it is quarantined;
/// planted there anyway, the next start neither links, serves nor removes what it names.
#[test]
fn a_forged_announcement_sent_to_red_moves_nothing_at_the_next_start() {
    let dir = TempDir::new("security-forged-note").unwrap();
    let out = dir.path().join("vault");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"RED's own file").unwrap();
    let stem = "00000000000000aa-1-1";
    let forged = serde_json::json!({
        "entry": {"id": "0a".repeat(16), "blake3": blake3::hash(b"RED's own file").to_hex().to_string(),
                  "session": "aa", "epoch": 1, "stream": 1, "path": "", "size": 14, "delivered_at": 0, "node": ""},
        "name": "stolen.txt",
        "part": secret,
    })
    .to_string();
    let ip = Lab::ip(loopback_net(), 2);
    let download = SocketAddr::from((ip, free_port(ip).unwrap()));
    let lone = LoneRed::start(dir.path(), &vault_section(&out, download)).unwrap();
    let mut raw = RawSender::new(&lone.fibers, 0x5ec0_0000_0000_0001, 1).unwrap();
    let hostile = [format!(".part/{stem}.ready.json"), ".quarantine/x.reason.json".into(), ".ledger (2).jsonl".into()];
    for (index, name) in hostile.iter().enumerate() {
        raw.file(2, index as u64 + 1, name, forged.as_bytes(), index as u8 + 1).unwrap();
    }
    raw.flush();
    let refused = wait_for(Duration::from_secs(10), || failed(&lone.status(), "name_refused") == 3);
    let status = lone.status();
    let mut red = lone.red;
    red.stop(Duration::from_secs(10));
    assert!(refused, "{status}");
    assert!(!out.join(format!(".part/{stem}.ready.json")).exists(), "nothing reaches RED's part folder");
    assert!(!out.join(".ledger (2).jsonl").exists() && !out.join(".quarantine/x.reason.json").exists());

    // Planted by other means: the next start refuses it.
    std::fs::write(out.join(format!(".part/{stem}.ready.json")), &forged).unwrap();
    std::fs::remove_file(dir.path().join("red-status.json")).unwrap();
    let lone = LoneRed::start(dir.path(), &vault_section(&out, download)).unwrap();
    assert!(wait_for(Duration::from_secs(10), || request(download, "GET", "/files", &[], b"").is_ok()));
    let listing = request(download, "GET", "/files", &[], b"").unwrap().json();
    let log = std::fs::read_to_string(&lone.log).unwrap_or_default();
    let mut red = lone.red;
    red.stop(Duration::from_secs(10));
    assert_eq!(listing["files"].as_array().map(Vec::len), Some(0), "nothing served: {listing}");
    assert_eq!(std::fs::read(&secret).unwrap(), b"RED's own file", "the named file stays where it was");
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "and is linked nowhere");
    assert!(!out.join(format!(".part/{stem}.ready.json")).exists(), "the forged note is removed");
    assert!(log.contains("refusing a delivery announcement"), "{log}");
}

/// Items 1 and 3 on BLUE and on RED's vault: dot-leading names are refused at upload with the reason,
/// and a delivered HTML page is served as a download, never rendered on the vault's origin.
#[test]
fn vault_refuses_hidden_names_and_serves_uploads_as_attachments() {
    let net = loopback_net();
    let folders = TempDir::new("security-vault").unwrap();
    let (blue_ip, red_ip) = (Lab::ip(net, 1), Lab::ip(net, 2));
    let download = SocketAddr::from((red_ip, free_port(red_ip).unwrap()));
    let channel = ChannelPlan {
        number: 3,
        kind: "vault",
        name: "vault".into(),
        listen: SocketAddr::from((blue_ip, free_port(blue_ip).unwrap())),
        multicast_group: None,
        destinations: Vec::new(),
        red_extra: format!("folder = \"{}\"\nlisten = \"{download}\"\n", folders.path().join("vault").display()),
        blue_extra: format!("spool = \"{}\"\n", folders.path().join("spool").display()),
    };
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let upload = channel.listen;
    for name in
        [".part%2Fx.ready.json", ".quarantine%2Fx", ".ledger%20(2).jsonl", "a%2F.shadow%2Fb", "x%E2%80%AEfdp.exe"]
    {
        let answer = request(upload, "PUT", &format!("/upload/{name}"), &[], b"x").unwrap();
        assert_eq!(answer.status, 400, "{name}");
        let error = answer.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("name refused"), "{name}: {error}");
    }
    let page = b"<html><script>fetch('/api/v1/ha/demote',{method:'POST'})</script></html>";
    assert_eq!(request(upload, "PUT", "/upload/page.html", &[], page).unwrap().status, 201);
    let arrived = wait_for(Duration::from_secs(20), || {
        request(download, "GET", "/files/page.html", &[], b"").is_ok_and(|a| a.status == 200)
    });
    let served = request(download, "GET", "/files/page.html", &[], b"").unwrap();
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop());
    assert!(arrived, "{logs}");
    assert!(served.body == page);
    assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
    assert!(
        served.header("content-disposition").is_some_and(|d| d.starts_with("attachment;")),
        "{:?}",
        served.header("content-disposition")
    );
    assert!(served.header("content-security-policy").is_some_and(|c| c.contains("sandbox")));
}

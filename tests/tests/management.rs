//! The management API of real daemons: a BLUE pair electing over UDP on loopback, each with its own
//! management address and credentials, and a single red-rx.
//!
//! What must hold: nothing answers without valid credentials (401); the status has the documented
//! shape; Demote and Promote move the role between the two nodes; a configuration exported and
//! imported again round-trips, and a bad one is refused with its field and reason; metrics carry the
//! counters in Prometheus text format. The dashboard itself is driven by a browser in `dashboard.rs`.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::bins::binaries;
use tests::error::{IoContext, LabError, LabResult};
use tests::http::{base64_decode, basic_auth, request, request_from, Answer};
use tests::lab::{free_port, loopback_net, wait_for, Lab, Proc, TempDir};

const USER: &str = "operator";
const PASSWORD: &str = "correct horse battery";
const TOKEN: &str = "scrape-token-1234";

fn hash_secret(program: &Path, secret: &str) -> String {
    tests::bins::hash_secret(program, secret).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    basic_auth(user, password)
}

fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    request(addr, "GET", path, &headers, b"").unwrap()
}

fn post(addr: SocketAddr, path: &str, auth: &str, body: &[u8]) -> Answer {
    request(addr, "POST", path, &[("Authorization", auth)], body).unwrap()
}

struct Pair {
    net: [u8; 3],
    _dir: TempDir,
    _procs: Vec<Proc>,
    blue_api: [SocketAddr; 2],
    red_api: SocketAddr,
    blue_configs: [std::path::PathBuf; 2],
}

fn start() -> Pair {
    let bins = binaries().unwrap();
    let net = loopback_net();
    let dir = TempDir::new("management").unwrap();
    let password_hash = hash_secret(&bins.blue_tx, PASSWORD);
    let token_hash = hash_secret(&bins.blue_tx, TOKEN);
    let management = |addr: SocketAddr| {
        format!(
            "[management]\nlisten = \"{addr}\"\nusername = \"{USER}\"\npassword_hash = \"{password_hash}\"\ntoken_hash = \"{token_hash}\"\n"
        )
    };
    let red_ip = Lab::ip(net, 2);
    let fibers = [free_port(red_ip).unwrap(), free_port(red_ip).unwrap()];
    let red_api = SocketAddr::from((Lab::ip(net, 22), free_port(Lab::ip(net, 22)).unwrap()));
    let red_toml = format!(
        "[node]\nname = \"red1\"\nstate_dir = \"{}\"\n[[fiber]]\nlisten = \"{red_ip}:{}\"\n[[fiber]]\nlisten = \"{red_ip}:{}\"\n\
         [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\n[[channel.destination]]\naddress = \"127.0.0.1:9\"\n{}",
        dir.path().join("red-state").display(),
        fibers[0],
        fibers[1],
        management(red_api)
    );
    std::fs::write(dir.path().join("red.toml"), red_toml).unwrap();
    let mut procs = vec![Proc::run_daemon(&bins.red_rx, &dir.path().join("red.toml")).unwrap()];
    let vip = Lab::ip(net, 100);
    let vip_listen = SocketAddr::from((vip, free_port(vip).unwrap()));
    let advert_ports = [free_port(Lab::ip(net, 11)).unwrap(), free_port(Lab::ip(net, 12)).unwrap()];
    let blue_api = [0, 1].map(|i| {
        let ip = Lab::ip(net, 31 + i as u8);
        SocketAddr::from((ip, free_port(ip).unwrap()))
    });
    let blue_configs = [0usize, 1].map(|index| {
        let me = Lab::ip(net, 11 + index as u8);
        let peer = Lab::ip(net, 12 - index as u8);
        let toml = format!(
            "[node]\nname = \"blue{n}\"\n\
             [ha]\nvhid = 9\nvip = \"{vip}\"\nsecurity_text = \"lab-secret\"\ninterval_ms = 200\nskew = {skew}\n\
             transport = \"udp\"\nbind = \"{me}:{my_port}\"\npeers = [\"{peer}:{peer_port}\"]\n\
             [link]\nrate_mbps = 100\n[[fiber]]\nremote = \"{red_ip}:{f1}\"\n[[fiber]]\nremote = \"{red_ip}:{f2}\"\n\
             [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\nlisten = \"{vip_listen}\"\n{management}",
            n = index + 1,
            skew = index * 20,
            my_port = advert_ports[index],
            peer_port = advert_ports[1 - index],
            f1 = fibers[0],
            f2 = fibers[1],
            management = management(blue_api[index]),
        );
        let path = dir.path().join(format!("blue{}.toml", index + 1));
        std::fs::write(&path, toml).unwrap();
        path
    });
    for path in &blue_configs {
        procs.push(Proc::run_daemon(&bins.blue_tx, path).unwrap());
    }
    let auth = basic(USER, PASSWORD);
    for api in blue_api.iter().chain([&red_api]) {
        assert!(
            wait_for(Duration::from_secs(20), || request(
                *api,
                "GET",
                "/api/v1/status",
                &[("Authorization", &auth)],
                b""
            )
            .is_ok_and(|a| a.status == 200)),
            "management API at {api} did not come up"
        );
    }
    Pair { net, _dir: dir, _procs: procs, blue_api, red_api, blue_configs }
}

fn role(api: SocketAddr) -> String {
    get(api, "/api/v1/status", Some(&basic(USER, PASSWORD))).json()["role"].as_str().unwrap_or("").to_string()
}

#[test]
fn the_management_api_authenticates_reports_steers_and_round_trips_the_configuration() {
    let pair = start();
    let [api1, api2] = pair.blue_api;
    let auth = basic(USER, PASSWORD);
    let bearer = format!("Bearer {TOKEN}");

    // Nothing without valid credentials.
    for path in ["/api/v1/status", "/api/v1/transfers", "/api/v1/config/export", "/metrics"] {
        assert_eq!(get(api1, path, None).status, 401, "{path} without credentials");
        assert_eq!(get(api1, path, Some(&basic(USER, "wrong"))).status, 401, "{path} with a wrong password");
        assert_eq!(get(api1, path, Some("Bearer not-the-token")).status, 401, "{path} with a wrong token");
    }
    assert_eq!(post(api1, "/api/v1/ha/demote", "Bearer nope", b"").status, 401);
    assert_eq!(request(api1, "GET", "/api/v1/status", &[("Cookie", "diode_session=forged")], b"").unwrap().status, 401);

    // The status shape, with a password, a token, and a login session.
    assert!(wait_for(Duration::from_secs(10), || role(api1) == "active" && role(api2) == "standby"));
    let status = get(api1, "/api/v1/status", Some(&bearer)).json();
    for key in ["node", "side", "role", "redundancy", "epoch", "fibers", "channels", "alarms"] {
        assert!(status.get(key).is_some(), "status lacks {key}: {status}");
    }
    assert_eq!(status["side"], "blue");
    assert!(status["redundancy"]["state"].is_string() && status["redundancy"]["reason"].is_string());
    let standby = get(api2, "/api/v1/status", Some(&auth)).json();
    assert_eq!(standby["redundancy"]["state"], "redundant", "a standby hearing its active peer: {standby}");
    let login = request(
        api1,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        format!("{{\"username\":\"{USER}\",\"password\":\"{PASSWORD}\"}}").as_bytes(),
    )
    .unwrap();
    assert_eq!(login.status, 200);
    let cookie = login.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    assert!(login.header("set-cookie").unwrap().contains("HttpOnly"));
    assert_eq!(request(api1, "GET", "/api/v1/status", &[("Cookie", &cookie)], b"").unwrap().status, 200);
    let refused = request(
        api1,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        b"{\"username\":\"operator\",\"password\":\"x\"}",
    )
    .unwrap();
    assert_eq!(refused.status, 401);

    let red = get(pair.red_api, "/api/v1/status", Some(&auth)).json();
    assert_eq!(red["side"], "red");
    assert!(red["fec"]["recommendation"].is_string(), "{red}");
    assert_eq!(red["redundancy"]["state"], "not redundant");

    // Demote moves the role to the peer; Promote (node 1 is preferred) brings it back.
    let answer = post(api1, "/api/v1/ha/demote", &auth, b"");
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert!(
        wait_for(Duration::from_secs(10), || role(api2) == "active" && role(api1) == "standby"),
        "demote moved the role"
    );
    let answer = post(api1, "/api/v1/ha/promote", &auth, b"");
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert!(
        wait_for(Duration::from_secs(10), || role(api1) == "active" && role(api2) == "standby"),
        "promote brought it back"
    );

    // Backup and restore: the export leaves the secrets out unless asked for them, and an import of
    // it keeps the node's own.
    let original = std::fs::read(&pair.blue_configs[0]).unwrap();
    let with_secrets = get(api1, "/api/v1/config/export?secrets=include", Some(&auth));
    assert_eq!(with_secrets.status, 200);
    assert_eq!(with_secrets.body, original, "with ?secrets=include, the file as it is");
    let exported = get(api1, "/api/v1/config/export", Some(&auth));
    assert_eq!(exported.status, 200);
    let text = String::from_utf8(exported.body.clone()).unwrap();
    let original_text = String::from_utf8(original.clone()).unwrap();
    for secret_line in
        original_text.lines().filter(|l| l.starts_with("password_hash") || l.starts_with("security_text"))
    {
        let value = secret_line.split_once('=').unwrap().1.trim().trim_matches('"');
        assert!(!text.contains(value), "the export leaks {secret_line}:\n{text}");
    }
    assert!(text.contains("<redacted>"), "{text}");
    let toml = [("Content-Type", "application/toml")];
    let import = |body: &[u8], headers: &[(&str, &str)]| {
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        request(api1, "POST", "/api/v1/config/import", &all, body).unwrap()
    };
    assert_eq!(import(&exported.body, &[]).status, 415, "an import needs its content type");
    assert_eq!(import(&exported.body, &[("Content-Type", "text/plain")]).status, 415);
    let imported = import(&exported.body, &toml);
    assert_eq!(imported.status, 200, "{:?}", imported.json());
    assert_eq!(imported.json()["restart_required"], true);
    assert_eq!(get(api1, "/api/v1/config/export", Some(&auth)).body, exported.body, "round trip");
    let saved = String::from_utf8(std::fs::read(&pair.blue_configs[0]).unwrap()).unwrap();
    assert!(!saved.contains("<redacted>"), "the node's secrets were kept: {saved}");
    for secret_line in
        original_text.lines().filter(|l| l.starts_with("password_hash") || l.starts_with("security_text"))
    {
        let value = secret_line.split_once('=').unwrap().1.trim().trim_matches('"');
        assert!(saved.contains(value), "{secret_line} lost in the import:\n{saved}");
    }
    let before_bad = std::fs::read(&pair.blue_configs[0]).unwrap();
    let bad = text.replace("rate_mbps = 100", "rate_mbps = 0");
    assert_ne!(bad, text);
    let refused = import(bad.as_bytes(), &toml);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["field"], "link: rate_mbps", "{:?}", refused.json());
    assert!(refused.json()["reason"].is_string());
    assert_eq!(std::fs::read(&pair.blue_configs[0]).unwrap(), before_bad, "a refused import changes nothing");

    // The scrape token reads the metrics and the status, and nothing else.
    for (method, path) in [
        ("GET", "/api/v1/config/export"),
        ("GET", "/api/v1/transfers"),
        ("POST", "/api/v1/ha/demote"),
        ("POST", "/api/v1/config/import"),
    ] {
        let answer = request(api1, method, path, &[("Authorization", &bearer), toml[0]], b"").unwrap();
        assert_eq!(answer.status, 403, "{method} {path} with the scrape token");
    }

    // A page elsewhere cannot use the operator's session: the dashboard's header and this server's
    // Origin are required for a change with the cookie.
    for headers in [
        vec![("Cookie", cookie.as_str())],
        vec![("Cookie", cookie.as_str()), ("X-Diode-Dashboard", "1")],
        vec![("Cookie", cookie.as_str()), ("X-Diode-Dashboard", "1"), ("Origin", "http://vault.example")],
    ] {
        let answer = request(api1, "POST", "/api/v1/ha/demote", &headers, b"").unwrap();
        assert_eq!(answer.status, 403, "{headers:?}: {:?}", answer.json());
    }
    assert!(wait_for(Duration::from_secs(2), || role(api1) == "active"), "nothing was demoted");

    // Guessing from one address locks out that address only, with 429 and Retry-After, for tokens,
    // Basic and the login form alike; the operator elsewhere is not locked out.
    let guesser = std::net::IpAddr::V4(Lab::ip(pair.net, 66));
    let throttle = |auth: &str| {
        for _ in 0..25 {
            let answer = request_from(guesser, api2, "GET", "/api/v1/status", &[("Authorization", auth)], b"").unwrap();
            if answer.status == 429 {
                return answer;
            }
            assert_eq!(answer.status, 401);
        }
        panic!("the guesser was never throttled");
    };
    for answer in [throttle("Bearer guess"), throttle(&basic(USER, "guess"))] {
        let retry = answer.header("retry-after").and_then(|v| v.parse::<u64>().ok());
        assert!(retry.is_some_and(|s| (1..=10).contains(&s)), "{:?}", answer.headers);
    }
    let form = format!("{{\"username\":\"{USER}\",\"password\":\"guess\"}}");
    let login_answer =
        request_from(guesser, api2, "POST", "/api/v1/login", &[("Content-Type", "application/json")], form.as_bytes())
            .unwrap();
    assert_eq!(login_answer.status, 429);
    assert!(login_answer.header("retry-after").is_some());
    // The token was never used on this node: its check runs, from another address, and passes.
    assert_eq!(get(api2, "/api/v1/status", Some(&bearer)).status, 200, "the operator is not locked out");

    // Transfers and metrics.
    assert!(get(api1, "/api/v1/transfers", Some(&auth)).json()["transfers"].is_array());
    let metrics = get(api1, "/metrics", Some(&bearer));
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    for needle in [
        "# TYPE diode_wire_bytes counter",
        "diode_wire_bytes_total{node=\"blue1\",side=\"blue\"}",
        "diode_ha_role{",
        "diode_drops_total{",
        "# EOF",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let red_metrics = String::from_utf8(get(pair.red_api, "/metrics", Some(&bearer)).body).unwrap();
    for needle in ["diode_fec_headroom_ratio{", "diode_blocks_lost_total{", "diode_fiber_kernel_drops_total{"] {
        assert!(red_metrics.contains(needle), "RED metrics lack {needle}:\n{red_metrics}");
    }
}

#[test]
fn a_management_section_without_credentials_or_on_the_vip_is_refused() {
    let bins = binaries().unwrap();
    let dir = TempDir::new("management-check").unwrap();
    let base = "[node]\nname = \"b\"\n[[fiber]]\nremote = \"127.0.0.1:9\"\n";
    let cases = [
        (format!("{base}[management]\nlisten = \"127.0.0.1:9000\"\n"), "no credentials"),
        (format!("{base}[management]\nlisten = \"127.0.0.1:9000\"\nusername = \"a\"\npassword_hash = \"secret\"\n"), "management: password_hash: not an Argon2 hash"),
        (
            format!(
                "{base}[ha]\nvhid = 1\nvip = \"127.0.0.50\"\nsecurity_text = \"x\"\ntransport = \"udp\"\nbind = \"127.0.0.1:1\"\npeers = [\"127.0.0.1:2\"]\n[management]\nlisten = \"127.0.0.50:9000\"\ntoken_hash = \"{}\"\n",
                hash_secret(&bins.blue_tx, "t")
            ),
            "management: listen: is the data VIP",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("blue.toml");
        std::fs::write(&path, text).unwrap();
        let output = Command::new(&bins.blue_tx).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// A WebDriver session on Debian's chromium through chromedriver, spoken over plain HTTP.
struct Browser {
    driver: SocketAddr,
    session: String,
    _process: Proc,
    _profile: TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Option<Browser> {
        let chromedriver = Path::new("/usr/bin/chromedriver");
        let chromium = Path::new("/usr/bin/chromium");
        if !chromedriver.exists() || !chromium.exists() {
            assert!(std::env::var_os("CI").is_none(), "CI must install Debian's chromium and chromium-driver");
            eprintln!(
                "skipped: chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let profile = TempDir::new("chromium-profile").unwrap();
        let port = free_port(std::net::Ipv4Addr::LOCALHOST).unwrap();
        let process = Proc::spawn(
            "chromedriver",
            chromedriver,
            &[format!("--port={port}")],
            &profile.path().join("chromedriver.log"),
        )
        .unwrap();
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(wait_for(Duration::from_secs(20), || request(driver, "GET", "/status", &[], b"").is_ok()));
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.path().join("data").display()),
                ],
            },
        }}});
        let answer = Browser::call(driver, "POST", "/session", Some(&capabilities));
        let session =
            answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_string();
        Some(Browser { driver, session, _process: process, _profile: profile })
    }

    fn call(driver: SocketAddr, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if method == "POST" { &[("Content-Type", "application/json")] } else { &[] };
        request(driver, method, path, headers, body.as_bytes()).unwrap().json()
    }

    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        Browser::call(self.driver, "POST", &format!("/session/{}{path}", self.session), Some(&body))
    }

    fn get(&self, path: &str) -> serde_json::Value {
        Browser::call(self.driver, "GET", &format!("/session/{}{path}", self.session), None)
    }

    fn element(&self, css: &str) -> String {
        let answer = self.post("/element", serde_json::json!({"using": "css selector", "value": css}));
        answer["value"][ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {answer}")).to_string()
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.post(&format!("/element/{element}/click"), serde_json::json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.post(&format!("/element/{element}/value"), serde_json::json!({"text": text}));
    }

    fn text(&self, css: &str) -> String {
        let element = self.element(css);
        self.get(&format!("/element/{element}/text"))["value"].as_str().unwrap_or("").to_string()
    }

    fn screenshot(&self, path: &Path) {
        let answer = self.get("/screenshot");
        let png = base64_decode(answer["value"].as_str().unwrap_or("")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(self.driver, "DELETE", &format!("/session/{}", self.session), &[], b"");
    }
}

/// Where CI keeps what a run produced for people to look at.
fn artifacts_dir() -> std::path::PathBuf {
    std::env::var_os("CI_ARTIFACTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts"))
}

#[test]
fn the_dashboard_in_a_browser_logs_in_shows_the_role_and_demotes() {
    let Some(browser) = Browser::start() else { return };
    let pair = start();
    let [api1, api2] = pair.blue_api;
    assert!(wait_for(Duration::from_secs(10), || role(api1) == "active" && role(api2) == "standby"));
    browser.post("/url", serde_json::json!({"url": format!("http://{api1}/")}));
    browser.type_into("#username", USER);
    browser.type_into("#password", "wrong password");
    browser.click("#login-button");
    assert!(
        wait_for(Duration::from_secs(10), || browser.text("#login-error").contains("Wrong")),
        "a wrong password is refused"
    );
    browser.post("/url", serde_json::json!({"url": format!("http://{api1}/")}));
    browser.type_into("#username", USER);
    browser.type_into("#password", PASSWORD);
    browser.click("#login-button");
    assert!(wait_for(Duration::from_secs(10), || browser.text("#role") == "active"), "the dashboard shows the role");
    assert_eq!(browser.text("#title"), "blue1");
    browser.click("#demote");
    assert!(browser.text("#modal-text").contains("Demote this node?"), "Demote asks for confirmation");
    browser.click("#modal-yes");
    assert!(wait_for(Duration::from_secs(10), || browser.text("#role") == "standby"), "the role changes on the page");
    assert!(wait_for(Duration::from_secs(10), || role(api2) == "active"), "the peer took over");
    let shot = artifacts_dir().join("dashboard.png");
    browser.screenshot(&shot);
    println!("dashboard screenshot: {}", shot.display());
}

/// Asks `python3` (on every machine the project runs on) for one HTTPS request that trusts only `ca`.
fn https_status(addr: SocketAddr, ca: &Path, auth: &str) -> LabResult<u16> {
    let script = r#"
import ssl, sys
import socket
context = ssl.create_default_context(cafile=sys.argv[3])
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
tls = context.wrap_socket(raw, server_hostname="localhost")
tls.sendall(("GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + sys.argv[4] + "\r\nConnection: close\r\n\r\n").encode())
print(tls.recv(64).decode().split(" ")[1])
"#;
    let output = Command::new("python3")
        .args(["-c", script, &addr.ip().to_string(), &addr.port().to_string(), &ca.display().to_string(), auth])
        .output()
        .at("running python3")?;
    if !output.status.success() {
        return Err(LabError::command("python3 https client", String::from_utf8_lossy(&output.stderr)));
    }
    let answer = String::from_utf8_lossy(&output.stdout);
    answer.trim().parse().map_err(|_| LabError::unexpected(format!("no HTTP status in {answer:?}")))
}

#[test]
fn with_a_certificate_the_management_api_speaks_only_tls() {
    let bins = binaries().unwrap();
    let dir = TempDir::new("management-tls").unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("mgmt.crt"), dir.path().join("mgmt.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let net = loopback_net();
    let api = SocketAddr::from((Lab::ip(net, 31), free_port(Lab::ip(net, 31)).unwrap()));
    let toml = format!(
        "[node]\nname = \"blue1\"\n[[fiber]]\nremote = \"{}:9\"\n[management]\nlisten = \"{api}\"\nusername = \"{USER}\"\npassword_hash = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        Lab::ip(net, 2),
        hash_secret(&bins.blue_tx, PASSWORD),
        cert_path.display(),
        key_path.display()
    );
    std::fs::write(dir.path().join("blue.toml"), toml).unwrap();
    let _blue = Proc::run_daemon(&bins.blue_tx, &dir.path().join("blue.toml")).unwrap();
    let auth = basic(USER, PASSWORD);
    assert!(
        wait_for(Duration::from_secs(20), || https_status(api, &cert_path, &auth).ok() == Some(200)),
        "HTTPS with the certificate: {:?}\n{}",
        https_status(api, &cert_path, &auth),
        std::fs::read_to_string(dir.path().join("blue.log")).unwrap_or_default()
    );
    assert_eq!(https_status(api, &cert_path, &basic(USER, "wrong")).ok(), Some(401));
    // Plain HTTP gets no answer: the server expects a TLS handshake.
    let plain = request(api, "GET", "/api/v1/status", &[("Authorization", &auth)], b"");
    assert!(plain.is_err() || plain.is_ok_and(|a| a.status != 200), "no plain-HTTP access");
    // A client that does not trust the certificate refuses the connection.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_path = dir.path().join("other.crt");
    std::fs::write(&other_path, other.cert.pem()).unwrap();
    assert!(https_status(api, &other_path, &auth).is_err());
}

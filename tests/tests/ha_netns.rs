//! The HA scenarios in network namespaces (root only; CI runs as root): the same run as
//! `diode-lab ha --netns`, with three kill -9 trials to keep the suite short.

#[test]
fn ha_pairs_in_network_namespaces_pass_every_scenario() {
    if !tests::netns::is_root() {
        eprintln!("skipped: building network namespaces needs root");
        return;
    }
    let report = tests::ha_lab::run(3).expect("the lab builds");
    let summary: Vec<String> = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} ok={} skipped={} takeover_ms={} {}",
                s["name"], s["ok"], s["skipped"], s["takeover_ms"], s["detail"]
            )
        })
        .collect();
    eprintln!("{}", summary.join("\n"));
    assert_eq!(report["namespaces_left"], serde_json::json!([]), "no namespace left behind");
    assert_eq!(report["ok"], true, "{}\n{}", summary.join("\n"), report["logs"].as_str().unwrap_or(""));
    let kill = &report["scenarios"][1];
    assert!(kill["takeover_ms"].as_u64().is_some_and(|ms| ms <= 1000), "{kill}");
}

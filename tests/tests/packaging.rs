//! The files in packaging/: the example configurations pass `check-config`, and the systemd units keep
//! the sandbox the operator guide promises (only CAP_NET_ADMIN and CAP_NET_RAW, a read-only system with
//! write access to exactly the folders the example configurations use, restart on failure).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::bins::binaries;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

#[test]
fn example_configurations_pass_check_config() {
    let bins = binaries().unwrap();
    for (program, file) in [(&bins.blue_tx, "blue-tx.toml"), (&bins.red_rx, "red-rx.toml")] {
        let output = Command::new(program).arg("check-config").arg(packaging().join(file)).output().unwrap();
        assert!(output.status.success(), "{file}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// The values of `key = "value"` lines for `key` in a TOML text.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .filter_map(|v| v.split('"').nth(1))
        .collect()
}

#[test]
fn systemd_units_are_sandboxed_and_can_write_where_the_examples_write() {
    for (unit, config, folder_keys) in [
        ("blue-tx.service", "blue-tx.toml", ["folder", "spool"]),
        ("red-rx.service", "red-rx.toml", ["folder", "quarantine"]),
    ] {
        let text = std::fs::read_to_string(packaging().join("systemd").join(unit)).unwrap();
        let setting = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{unit} lacks {key}"))
        };
        assert_eq!(setting("CapabilityBoundingSet"), "CAP_NET_ADMIN CAP_NET_RAW");
        assert_eq!(setting("AmbientCapabilities"), "CAP_NET_ADMIN CAP_NET_RAW");
        assert_eq!(setting("NoNewPrivileges"), "yes");
        assert_eq!(setting("ProtectSystem"), "strict");
        assert_eq!(setting("Restart"), "on-failure");
        assert!(setting("User") != "root", "{unit} runs as a dedicated user");
        let binary = unit.trim_end_matches(".service");
        assert!(setting("ExecStart").starts_with(&format!("/usr/local/bin/{binary} run --config /etc/diode/{config}")));
        assert!(setting("ExecStartPre").contains("check-config"));
        let writable: Vec<&str> = setting("ReadWritePaths").split_whitespace().collect();
        let example = std::fs::read_to_string(packaging().join(config)).unwrap();
        for key in folder_keys {
            for folder in values(&example, key) {
                assert!(
                    writable.iter().any(|w| Path::new(folder).starts_with(w)),
                    "{unit}: {folder} ({key} in {config}) is not under ReadWritePaths {writable:?}"
                );
            }
        }
        if binary == "red-rx" {
            // red-rx's fiber threads ask for this nice value (FIBER_THREAD_NICE in red-rx's daemon).
            assert_eq!(setting("LimitNICE"), "-10");
        }
        // The status file and control socket live in the unit's RuntimeDirectory.
        assert_eq!(setting("RuntimeDirectory"), "diode");
        for path in values(&example, "status_file").into_iter().chain(values(&example, "control_socket")) {
            assert!(path.starts_with("/run/diode/"), "{path}");
        }
        if let Ok(output) =
            Command::new("systemd-analyze").arg("verify").arg(packaging().join("systemd").join(unit)).output()
        {
            // Only the unit's own syntax matters here, not binaries missing on a test machine.
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!stderr.contains("Unknown key") && !stderr.contains("Invalid"), "{unit}: {stderr}");
        }
    }
}

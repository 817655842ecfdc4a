//! Configuration checks: every refusal names the field and the reason.

use super::*;

#[test]
fn addresses_are_parsed_with_actionable_errors() {
    assert_eq!(parse_addr("127.0.0.1:80"), Ok("127.0.0.1:80".parse().unwrap_or_else(|_| unreachable!())));
    let reason = |text: &str| parse_addr(text).map_err(|e| e.to_string());
    assert_eq!(reason("127.0.0.1:70000"), Err("port 70000 out of range (0-65535)".to_string()));
    assert_eq!(reason("host:80"), Err("'host' is not an IP address".to_string()));
    assert_eq!(reason("127.0.0.1"), Err("'127.0.0.1' is not an address: expected ip:port".to_string()));
    assert_eq!(parse_addr("127.0.0.1:x"), Err(AddrError::BadPort("x".into())));
}

fn sink(text: &str) -> Result<CheckedSink, ConfigError> {
    let channel: SinkChannel = parse_toml(Path::new("red.toml"), text)?;
    check_sink(Path::new("red.toml"), &channel)
}

#[test]
fn a_sink_without_destination_is_refused_by_channel_number() {
    let error = sink("number = 3\nkind = \"tcp\"\nname = \"x\"").unwrap_err();
    assert_eq!(error.to_string(), "red.toml: channel 3: has no destination");
    let error =
        sink("number = 7\nkind = \"tcp\"\nname = \"x\"\n[[destination]]\naddress = \"127.0.0.1:70000\"").unwrap_err();
    assert_eq!(error.to_string(), "red.toml: channel 7: destination 1: port 70000 out of range (0-65535)");
}

#[test]
fn a_sink_queue_smaller_than_a_block_is_refused_with_the_field() {
    let channel = "number = 4\nkind = \"tcp\"\nname = \"x\"\n[[destination]]\naddress = \"127.0.0.1:9\"";
    let error = sink(&channel.replace("name = \"x\"", "name = \"x\"\nqueue_bytes = 4096")).unwrap_err();
    assert_eq!(error.field, "channel 4: queue_bytes");
    assert!(error.reason.contains("at least 1048576"), "{error}");
    assert!(sink(channel).is_ok(), "the default is accepted");
}

#[test]
fn unknown_fields_are_refused_with_their_line() {
    let error = sink("number = 3\nkind = \"tcp\"\nname = \"x\"\ncolour = 1").unwrap_err();
    assert_eq!(error.field, "line 4");
    assert!(error.reason.contains("unknown field `colour`"), "{error}");
}

#[test]
fn fingerprint_depends_on_the_table_not_its_order() {
    let a: SourceChannel =
        parse_toml(Path::new("a"), "number = 1\nkind = \"tcp\"\nname = \"a\"\nlisten = \"127.0.0.1:1\"")
            .unwrap_or_else(|e| unreachable!("{e}"));
    let mut b = a.clone();
    b.number = 2;
    b.name = "b".into();
    assert_eq!(fingerprint(&[a.clone(), b.clone()]), fingerprint(&[b.clone(), a.clone()]));
    let mut renamed = b.clone();
    renamed.name = "c".into();
    assert_ne!(fingerprint(&[a.clone(), b]), fingerprint(&[a, renamed]));
}

fn source(text: &str) -> Result<CheckedSource, ConfigError> {
    let channel: SourceChannel = parse_toml(Path::new("blue.toml"), text)?;
    check_source(Path::new("blue.toml"), &channel)
}

#[test]
fn files_and_vault_settings_are_checked_per_kind() {
    let ok = source("number = 2\nkind = \"files\"\nname = \"f\"\nfolder = \"/srv/drop\"\ninclude = [\"**/*.csv\"]")
        .unwrap_or_else(|e| unreachable!("{e}"));
    let drop = ok.drop_folder.unwrap_or_else(|| unreachable!());
    assert_eq!(drop.rejected, PathBuf::from("/srv/drop/.diode/rejected"));
    assert_eq!(ok.spool, Some(PathBuf::from("/srv/drop/.diode/spool")));
    let cases = [
        (
            "number = 2\nkind = \"files\"\nname = \"f\"",
            "blue.toml: channel 2: folder: a files channel needs its drop folder",
        ),
        (
            "number = 2\nkind = \"files\"\nname = \"f\"\nfolder = \"drop\"",
            "blue.toml: channel 2: folder: 'drop' must be an absolute path",
        ),
        (
            "number = 2\nkind = \"files\"\nname = \"f\"\nfolder = \"/d\"\ninclude = [\"a[\"]",
            "blue.toml: channel 2: include: 'a[' is not a glob",
        ),
        (
            "number = 2\nkind = \"files\"\nname = \"f\"\nfolder = \"/d\"\nrepeat = 0",
            "blue.toml: channel 2: repeat: must be between 1 and 100",
        ),
        (
            "number = 2\nkind = \"tcp\"\nname = \"t\"\nlisten = \"127.0.0.1:1\"\nfolder = \"/d\"",
            "blue.toml: channel 2: folder: only files channels have this setting",
        ),
        (
            "number = 3\nkind = \"vault\"\nname = \"v\"\nlisten = \"127.0.0.1:1\"",
            "blue.toml: channel 3: spool: a vault channel needs a spool folder for uploads",
        ),
        (
            "number = 3\nkind = \"vault\"\nname = \"v\"\nspool = \"/s\"",
            "blue.toml: channel 3: listen: a vault channel needs an address to listen on",
        ),
    ];
    for (text, expected) in cases {
        let error = source(text).expect_err(text).to_string();
        assert!(error.starts_with(expected), "{error}");
    }
    let error = sink("number = 4\nkind = \"vault\"\nname = \"v\"\nfolder = \"/out\"").unwrap_err();
    assert_eq!(error.to_string(), "red.toml: channel 4: listen: a vault channel needs an address for its HTTP server");
    let error = sink(
        "number = 4\nkind = \"files\"\nname = \"f\"\nfolder = \"/out\"\n[[destination]]\naddress = \"127.0.0.1:9\"",
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "red.toml: channel 4: destination: a files channel delivers to its folder, not to destinations"
    );
    let files =
        sink("number = 4\nkind = \"files\"\nname = \"f\"\nfolder = \"/out\"").unwrap_or_else(|e| unreachable!("{e}"));
    let files = files.files.unwrap_or_else(|| unreachable!());
    assert_eq!(
        (files.quarantine, files.ledger),
        (PathBuf::from("/out/.quarantine"), PathBuf::from("/out/.ledger.jsonl"))
    );
}

#[test]
fn link_keys_are_checked_with_their_field() {
    let key = |id: u8, key: &str| LinkKeyConfig { id, key: Some(key.into()), key_file: None };
    let path = Path::new("blue.toml");
    let good = "ab".repeat(32);
    let auth = check_link_keys(path, &[key(1, &good), key(2, &"cd".repeat(32))], Some(2))
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(auth.send_key_id(), Some(2));
    assert!(!check_link_keys(path, &[], None).unwrap_or_else(|e| unreachable!("{e}")).requires_tag());
    let refused = [
        (vec![key(1, "abcd")], None, "link_key 1: a link key is 64 hex digits (32 bytes)"),
        (vec![key(1, &"zz".repeat(32))], None, "link_key 1: a link key is 64 hex digits (32 bytes)"),
        (vec![key(1, &"00".repeat(32))], None, "link_key 1: an all-zero key protects nothing"),
        (vec![key(1, &good)], Some(3), "link: send_key: send key id 3 is not among the configured link keys"),
        (vec![key(1, &good), key(1, &good)], Some(1), "link: send_key: link key id 1 is configured twice"),
        (vec![], Some(1), "link: send_key: key 1 is set but no [[link_key]] is configured"),
        (
            vec![LinkKeyConfig { id: 4, key: None, key_file: Some("/nonexistent/diode.key".into()) }],
            None,
            "link_key 4: key_file: cannot read /nonexistent/diode.key",
        ),
    ];
    for (keys, send, expected) in refused {
        let error = check_link_keys(path, &keys, send).map(|_| ()).unwrap_err().to_string();
        assert!(error.starts_with(&format!("blue.toml: {expected}")), "{error}");
    }
}

#[test]
fn duplicate_numbers_and_names_are_refused() {
    let a: SourceChannel =
        parse_toml(Path::new("a"), "number = 1\nkind = \"tcp\"\nname = \"a\"\nlisten = \"127.0.0.1:1\"")
            .unwrap_or_else(|e| unreachable!("{e}"));
    let error = check_identities(Path::new("blue.toml"), &[a.clone(), a]).unwrap_err();
    assert_eq!(error.to_string(), "blue.toml: channel 1: channel number used twice");
}

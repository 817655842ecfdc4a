//! What a configuration export leaves out, and how an import of such an export gets it back.
//!
//! An export is a backup an operator may mail, paste into a ticket or keep on a laptop: link keys,
//! the HA security text and the credential hashes stay on the node. Each is replaced by
//! [`REDACTED`]; an import that still holds the marker keeps the node's current value for that field,
//! so export, edit and import round-trips without the secrets ever leaving.

use connectors::config::FieldError;
use toml::{Table, Value};

/// What a redacted value reads.
pub const REDACTED: &str = "<redacted>";

/// Field names whose values are secrets, wherever they appear: inline link keys, the CARP/pair
/// security text, the management password and token hashes.
const SECRET_FIELDS: [&str; 5] = ["key", "security_text", "password_hash", "token_hash", "hash"];

/// The configuration with every secret replaced by [`REDACTED`], and how many were.
/// Why a configuration could not be redacted.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("the configuration does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("cannot write the redacted configuration: {0}")]
    Write(#[from] toml::ser::Error),
}

pub fn redact(text: &str) -> Result<(String, usize), RedactError> {
    let mut table: Table = toml::from_str(text)?;
    let mut count = 0;
    redact_table(&mut table, &mut count);
    let text = toml::to_string(&table)?;
    Ok((text, count))
}

fn redact_table(table: &mut Table, count: &mut usize) {
    for (name, value) in table.iter_mut() {
        if SECRET_FIELDS.contains(&name.as_str()) && value.is_str() {
            *value = Value::String(REDACTED.to_string());
            *count += 1;
        } else {
            redact_value(value, count);
        }
    }
}

fn redact_value(value: &mut Value, count: &mut usize) {
    match value {
        Value::Table(table) => redact_table(table, count),
        Value::Array(items) => items.iter_mut().for_each(|item| redact_value(item, count)),
        _ => {}
    }
}

/// An imported configuration with every [`REDACTED`] marker replaced by the value at the same place
/// in `current` (the node's file). Without markers it is returned unchanged, byte for byte. A marker
/// with nothing to restore from is an error naming the field.
pub fn restore(imported: &str, current: &str) -> Result<String, FieldError> {
    if !imported.contains(REDACTED) {
        return Ok(imported.to_string());
    }
    let mut table: Table =
        toml::from_str(imported).map_err(|e| FieldError::new("document", format!("does not parse: {e}")))?;
    let current: Table = toml::from_str(current).unwrap_or_default();
    restore_table(&mut table, Some(&current), "")?;
    toml::to_string(&table).map_err(|e| FieldError::new("document", e))
}

fn restore_table(table: &mut Table, current: Option<&Table>, at: &str) -> Result<(), FieldError> {
    for (name, value) in table.iter_mut() {
        let here = if at.is_empty() { name.clone() } else { format!("{at}: {name}") };
        restore_value(value, current.and_then(|c| c.get(name)), &here)?;
    }
    Ok(())
}

fn restore_value(value: &mut Value, current: Option<&Value>, at: &str) -> Result<(), FieldError> {
    match value {
        Value::String(text) if text == REDACTED => match current {
            Some(Value::String(kept)) => {
                *value = Value::String(kept.clone());
                Ok(())
            }
            _ => Err(FieldError::new(at, "is redacted and this node has no value there to keep")),
        },
        Value::Table(table) => restore_table(table, current.and_then(Value::as_table), at),
        // Entries of an array of tables are matched by position (`[[link_key]]` 1, 2, …).
        Value::Array(items) => {
            let kept = current.and_then(Value::as_array);
            for (index, item) in items.iter_mut().enumerate() {
                let here = format!("{at}[{}]", index + 1);
                restore_value(item, kept.and_then(|k| k.get(index)), &here)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# the node\n[node]\nname = \"blue1\"\n\n[ha]\nvhid = 9\nsecurity_text = \"s3cret\"\n\n\
        [management]\nlisten = \"127.0.0.1:9\"\ntoken_hash = \"$argon2id$tok\"\npassword_hash = \"$argon2id$pw\"\n\n\
        [[management.token]]\nhash = \"$argon2id$t2\"\nrole = \"metrics\"\n\n\
        [[link_key]]\nid = 1\nkey = \"11111111\"\n\n[[link_key]]\nid = 2\nkey_file = \"/etc/diode/k2\"\n";

    #[test]
    fn every_secret_is_redacted_and_nothing_else() {
        let (text, count) = redact(CONFIG).unwrap();
        assert_eq!(count, 5);
        for secret in ["s3cret", "$argon2id$tok", "$argon2id$pw", "$argon2id$t2", "11111111"] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        for kept in ["blue1", "vhid = 9", "/etc/diode/k2", "role = \"metrics\"", "127.0.0.1:9"] {
            assert!(text.contains(kept), "{kept} missing:\n{text}");
        }
    }

    #[test]
    fn an_import_of_a_redacted_export_keeps_the_nodes_secrets() {
        let (exported, _) = redact(CONFIG).unwrap();
        let edited = exported.replace("vhid = 9", "vhid = 10");
        let restored = restore(&edited, CONFIG).unwrap();
        let table: Table = toml::from_str(&restored).unwrap();
        assert_eq!(table["ha"]["vhid"].as_integer(), Some(10));
        assert_eq!(table["ha"]["security_text"].as_str(), Some("s3cret"));
        assert_eq!(table["link_key"][0]["key"].as_str(), Some("11111111"));
        assert_eq!(table["management"]["token"][0]["hash"].as_str(), Some("$argon2id$t2"));
        assert_eq!(restore(CONFIG, "").unwrap(), CONFIG, "without markers the text is kept as it is");
        let FieldError { field, reason } = restore(&exported, "[node]\nname = \"x\"\n").unwrap_err();
        assert_eq!(field, "ha: security_text");
        assert!(reason.contains("redacted"), "{reason}");
    }
}

//! File names from the wire (RED output folders, the vault) and from uploads: any UTF-8 is sanitised
//! without panicking, and whatever is accepted is a relative path of plain components within the
//! limits, that joins under a folder without escaping it.
#![no_main]

use std::path::{Component, Path};

use connectors::names::{sanitize, MAX_COMPONENT_LEN, MAX_DEPTH, MAX_PATH_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    let Ok(safe) = sanitize(name) else { return };
    let path = safe.to_path();
    assert!(path.is_relative());
    assert!(path.components().all(|c| matches!(c, Component::Normal(_))), "{name:?} -> {path:?}");
    assert!(safe.components().len() <= MAX_DEPTH);
    assert!(safe.as_text().len() <= MAX_PATH_LEN);
    for component in safe.components() {
        assert!(!component.is_empty() && component.len() <= MAX_COMPONENT_LEN);
        assert!(!component.contains(['/', '\\', '\0', ':']));
        assert!(!component.chars().any(char::is_control));
        assert!(!component.starts_with('.'), "a hidden name reaches RED's own state: {name:?}");
    }
    let base = Path::new("/srv/out");
    assert!(base.join(&path).starts_with(base));
    // A collision suffix keeps every property.
    let suffixed = safe.with_suffix(" (2)").to_path();
    assert!(suffixed.components().all(|c| matches!(c, Component::Normal(_))));
});

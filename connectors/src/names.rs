//! File names from the wire are hostile until proven safe.
//!
//! A name becomes a relative path under an output folder only when every component is a plain name:
//! no `..` or `.`, no absolute path or drive letter, no NUL or control characters, no backslash (a
//! Windows client would read it as a separator), no Windows device name (`CON`, `com1.txt`, …), no
//! trailing dot or space, no component starting with '.' (RED keeps its own state under such names:
//! `.part`, `.shadow`, `.quarantine`, the ledger; and a hidden file is not what a user means to send),
//! no bidirectional-override character (U+202A-U+202E, U+2066-U+2069: `report\u{202E}fdp.exe` shows as
//! `reportexe.pdf`), and lengths within what file systems take. Anything else is refused with the
//! reason, so the file is quarantined under a generated name instead.

use std::path::PathBuf;

/// Longest component, in bytes (the limit of ext4, XFS and NTFS).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Longest relative path, in bytes (well under PATH_MAX once the output folder is prefixed).
pub const MAX_PATH_LEN: usize = 1024;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {len} bytes long (at most {MAX_PATH_LEN})")]
    TooLong { len: usize },
    #[error("a path component is {len} bytes long (at most {MAX_COMPONENT_LEN})")]
    ComponentTooLong { len: usize },
    #[error("the path is {depth} folders deep (at most {MAX_DEPTH})")]
    TooDeep { depth: usize },
    #[error("absolute paths are refused")]
    Absolute,
    #[error("'..' and '.' components are refused")]
    DotComponent,
    #[error("an empty path component ('//') is refused")]
    EmptyComponent,
    #[error("NUL or control character U+{code:04X} in the name")]
    ControlCharacter { code: u32 },
    #[error("backslashes and ':' are refused (Windows separators and drive or stream names)")]
    WindowsSeparator,
    #[error("'{component}' is a Windows device name")]
    DeviceName { component: String },
    #[error("a component ends with a dot or a space")]
    TrailingDotOrSpace,
    #[error("'{component}' starts with '.': such names are reserved for the diode's own state")]
    Hidden { component: String },
    #[error("bidirectional-override character U+{code:04X} in the name (it can disguise an extension)")]
    BidiOverride { code: u32 },
}

diode_proto::reasons!(NameError patterns {
    NameError::Empty => "empty",
    NameError::TooLong { .. } | NameError::ComponentTooLong { .. } => "too_long",
    NameError::TooDeep { .. } => "too_deep",
    NameError::Absolute => "absolute",
    NameError::DotComponent => "dot_component",
    NameError::EmptyComponent => "empty_component",
    NameError::ControlCharacter { .. } => "control_character",
    NameError::WindowsSeparator => "windows_separator",
    NameError::DeviceName { .. } => "device_name",
    NameError::TrailingDotOrSpace => "trailing_dot_or_space",
    NameError::Hidden { .. } => "hidden",
    NameError::BidiOverride { .. } => "bidi_override",
});

const DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9", "LPT1", "LPT2",
    "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Characters that reorder how a name is displayed.
fn is_bidi_override(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A relative path whose every component passed the checks above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafePath {
    components: Vec<String>,
}

impl SafePath {
    /// The relative path with `/` separators, as it was accepted.
    pub fn as_text(&self) -> String {
        self.components.join("/")
    }

    /// The relative path for joining under a folder.
    pub fn to_path(&self) -> PathBuf {
        self.components.iter().collect()
    }

    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The same path with `suffix` inserted before the last component's extension (`a/b.txt` →
    /// `a/b (2).txt`), for name collisions.
    pub fn with_suffix(&self, suffix: &str) -> SafePath {
        let mut components = self.components.clone();
        if let Some(last) = components.last_mut() {
            *last = match last.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => format!("{stem}{suffix}.{ext}"),
                _ => format!("{last}{suffix}"),
            };
        }
        SafePath { components }
    }
}

/// Checks a name from the wire and returns it as a safe relative path.
pub fn sanitize(name: &str) -> Result<SafePath, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_PATH_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlCharacter { code: u32::from(c) });
    }
    if let Some(c) = name.chars().find(|c| is_bidi_override(*c)) {
        return Err(NameError::BidiOverride { code: u32::from(c) });
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    if name.contains('\\') || name.contains(':') {
        return Err(NameError::WindowsSeparator);
    }
    let mut components = Vec::new();
    for component in name.split('/') {
        if component.is_empty() {
            return Err(NameError::EmptyComponent);
        }
        if component == "." || component == ".." {
            return Err(NameError::DotComponent);
        }
        if component.len() > MAX_COMPONENT_LEN {
            return Err(NameError::ComponentTooLong { len: component.len() });
        }
        if component.ends_with('.') || component.ends_with(' ') {
            return Err(NameError::TrailingDotOrSpace);
        }
        // `CON`, `con.txt` and `COM1.tar.gz` all open the device on Windows.
        let stem = component.split('.').next().unwrap_or(component).trim_end();
        if DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem)) {
            return Err(NameError::DeviceName { component: component.to_string() });
        }
        if component.starts_with('.') {
            return Err(NameError::Hidden { component: component.to_string() });
        }
        components.push(component.to_string());
    }
    if components.len() > MAX_DEPTH {
        return Err(NameError::TooDeep { depth: components.len() });
    }
    Ok(SafePath { components })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_nested_names_are_kept() {
        let path = sanitize("reports/2026/q3 summary.pdf").unwrap();
        assert_eq!(path.as_text(), "reports/2026/q3 summary.pdf");
        assert_eq!(path.to_path(), PathBuf::from("reports").join("2026").join("q3 summary.pdf"));
        assert_eq!(sanitize("über-größe.txt").unwrap().as_text(), "über-größe.txt");
    }

    #[test]
    fn hostile_names_are_refused_with_their_reason() {
        let refused = [
            ("", "empty"),
            ("../etc/passwd", "dot_component"),
            ("a/../../b", "dot_component"),
            ("./a", "dot_component"),
            ("/etc/passwd", "absolute"),
            ("a//b", "empty_component"),
            ("a/", "empty_component"),
            ("a\0b", "control_character"),
            ("line\nbreak", "control_character"),
            ("C:\\Windows\\x", "windows_separator"),
            ("dir\\..\\x", "windows_separator"),
            ("file.txt:stream", "windows_separator"),
            ("CON", "device_name"),
            ("docs/nul.txt", "device_name"),
            ("com1.tar.gz", "device_name"),
            ("Lpt9", "device_name"),
            ("trailing.", "trailing_dot_or_space"),
            ("trailing ", "trailing_dot_or_space"),
            (".diode/ledger", "hidden"),
            (".part/0000000000000001-1-1.ready.json", "hidden"),
            (".quarantine/x", "hidden"),
            (".ledger (2).jsonl", "hidden"),
            ("a/.shadow/b", "hidden"),
            (".profile", "hidden"),
            ("report\u{202E}fdp.exe", "bidi_override"),
            ("x\u{2066}y", "bidi_override"),
        ];
        for (name, label) in refused {
            let error = sanitize(name).expect_err(name);
            assert_eq!(error.label(), label, "{name:?}: {error}");
        }
        assert_eq!(sanitize(&"a".repeat(4096)).unwrap_err().label(), "too_long");
        assert_eq!(sanitize(&"a".repeat(300)).unwrap_err().label(), "too_long");
        assert_eq!(sanitize(&["d"; 40].join("/")).unwrap_err().label(), "too_deep");
        // Names that merely look like devices are fine.
        assert!(sanitize("console.log").is_ok());
        assert!(sanitize("com10").is_ok());
    }

    #[test]
    fn collision_suffix_goes_before_the_extension() {
        let path = sanitize("a/report.pdf").unwrap();
        assert_eq!(path.with_suffix(" (2)").as_text(), "a/report (2).pdf");
        assert_eq!(sanitize("archive.tar.gz").unwrap().with_suffix(" (2)").as_text(), "archive.tar (2).gz");
        assert_eq!(sanitize("README").unwrap().with_suffix(" (3)").as_text(), "README (3)");
    }

    proptest::proptest! {
        #[test]
        fn accepted_names_stay_inside_the_folder(name in "\\PC{0,80}") {
            if let Ok(path) = sanitize(&name) {
                let path = path.to_path();
                proptest::prop_assert!(path.is_relative());
                proptest::prop_assert!(path.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                proptest::prop_assert!(path.components().all(|c| !c.as_os_str().to_string_lossy().starts_with('.')));
            }
        }
    }
}

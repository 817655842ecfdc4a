//! Finding (and if needed building) the binaries the lab starts as real processes.
//!
//! The lab runs blue-tx, red-rx and fiber-sim as separate processes, so they must exist beside the
//! running executable. `cargo test` and `cargo run` only build the binaries of the package they run,
//! so when a binary is missing or older than its sources the lab asks cargo to build it, once.

use crate::error::{IoContext, LabError, LabResult};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The daemons and the simulator.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub blue_tx: PathBuf,
    pub red_rx: PathBuf,
    pub fiber_sim: PathBuf,
    /// The lab itself, whose hidden helper commands run inside network namespaces.
    pub diode_lab: PathBuf,
}

/// The profile directory (`target/<profile>`) the current executable belongs to.
fn profile_dir() -> LabResult<PathBuf> {
    let exe = std::env::current_exe().at("cannot locate this executable")?;
    let parent = exe.parent().ok_or_else(|| LabError::unexpected("executable has no directory"))?;
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    Ok(if parent.ends_with("deps") { parent.parent().unwrap_or(parent).to_path_buf() } else { parent.to_path_buf() })
}

fn build(profile_dir: &Path) -> LabResult<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target_dir = profile_dir.parent().ok_or_else(|| LabError::unexpected("profile directory has no parent"))?;
    let mut command = Command::new(cargo);
    command
        .args(["build", "-q", "-p", "blue-tx", "-p", "red-rx", "-p", "hw", "-p", "tests", "--bins", "--target-dir"])
        .arg(target_dir);
    if profile_dir.ends_with("release") {
        command.arg("--release");
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = command.current_dir(workspace).status().at("cannot run cargo to build the daemons")?;
    if !status.success() {
        return Err(LabError::command("cargo build of blue-tx, red-rx and fiber-sim", status));
    }
    Ok(())
}

/// The binaries, built first if needed (once per process). Binaries that exist are used even when
/// cargo cannot be run, so an installed lab works without a toolchain.
pub fn binaries() -> LabResult<Binaries> {
    static BUILT: OnceLock<LabResult<Binaries>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir()?;
            let built = build(&dir);
            let found = Binaries {
                blue_tx: dir.join("blue-tx"),
                red_rx: dir.join("red-rx"),
                fiber_sim: dir.join("fiber-sim"),
                diode_lab: dir.join("diode-lab"),
            };
            for path in [&found.blue_tx, &found.red_rx, &found.fiber_sim, &found.diode_lab] {
                if !path.exists() {
                    let why = match &built {
                        Err(error) => error.to_string(),
                        Ok(()) => "the build did not produce it".to_string(),
                    };
                    return Err(LabError::command("cargo build", format!("{} is missing: {why}", path.display())));
                }
            }
            Ok(found)
        })
        .as_ref()
        .cloned()
        // The first caller's error, told again to each later one (io errors cannot be cloned).
        .map_err(|error| LabError::command("cargo build", error))
}

/// An Argon2 hash of `secret`, made by the daemon's own `hash-secret` command (`program` is blue-tx
/// or red-rx), as an operator makes one for `[management]`.
pub fn hash_secret(program: &Path, secret: &str) -> LabResult<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .doing(|| program.display().to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{secret}\n").as_bytes()).at("writing the secret to hash-secret")?;
    }
    let output = child.wait_with_output().at("waiting for hash-secret")?;
    if !output.status.success() {
        return Err(LabError::command(format!("{} hash-secret", program.display()), output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

//! What can go wrong in the harness, as one error type for every lab command and test helper.
//!
//! The lab's errors end up printed to an operator or a test log, so each variant carries what the lab
//! was doing when it failed: the file, address or command ([`LabError::Io`], [`LabError::Command`]),
//! the protocol object that refused what the lab built ([`LabError::Build`]), or what the lab expected
//! of the diode and did not see ([`LabError::Unexpected`]).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file, socket or process call failed; `what` names the file, address or step.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A program the lab runs (cargo, ip, hash-secret) could not run or answered with a failure.
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
    /// The protocol library refused a frame or configuration the lab built.
    #[error("building diode traffic: {0}")]
    Build(#[from] diode_proto::block::BuildError),
    #[error("FEC parameters: {0}")]
    Fec(#[from] diode_proto::fec::FecParamsError),
    /// A program this check needs is not installed here, so the check is SKIPPED, not failed.
    #[error("{program} is not installed ({install})")]
    Missing { program: &'static str, install: &'static str },
    /// A lab thread died before it could say what it saw.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The diode (or a program under test) did not do what the lab waited for: what was expected and
    /// what was seen, with the logs that explain it where there are any.
    #[error("{0}")]
    Unexpected(String),
}

impl LabError {
    pub fn unexpected(text: impl Into<String>) -> LabError {
        LabError::Unexpected(text.into())
    }

    pub fn command(command: impl Into<String>, detail: impl ToString) -> LabError {
        LabError::Command { command: command.into(), detail: detail.to_string() }
    }
}

/// Names the step an I/O call belonged to, so the error says which file or socket failed.
pub trait IoContext<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, LabError>;
    fn at(self, what: &str) -> Result<T, LabError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, LabError> {
        self.map_err(|source| LabError::Io { what: what(), source })
    }

    fn at(self, what: &str) -> Result<T, LabError> {
        self.map_err(|source| LabError::Io { what: what.to_string(), source })
    }
}

pub type LabResult<T> = Result<T, LabError>;

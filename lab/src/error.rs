//! What goes wrong in the lab, typed. The system's own failures (a call, a program the lab
//! runs, a file that is not what it must be) are [`SysError`]; each room says what went
//! wrong in its own terms on top of it: [`crate::pki::PkiError`], [`crate::bird::BirdError`],
//! [`crate::setup::SetupError`], [`crate::node::NodeError`] and
//! [`crate::client::ClientError`]. Every message names where (the file, the namespace,
//! the node, the address) and what; the binary prints it, a caller can match on it.

use std::path::{Path, PathBuf};

/// A failure of the system under the lab.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A system call, socket, device or file operation failed while the lab was doing `what`.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A program the lab runs could not be started (`hint` says which package has it).
    #[error("cannot run `{program}`{hint}: {source}")]
    NotRun {
        program: &'static str,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A program ran and refused: the command line and what it said.
    #[error("{command}: {said}{hint}")]
    Refused { command: String, said: String, hint: &'static str },
    /// A file that is not what it must be (its contents, its kind, its mode).
    #[error("{}: {why}", path.display())]
    BadFile { path: PathBuf, why: String },
}

impl SysError {
    /// A file at `path` is not what it must be: `why`.
    pub fn bad_file(path: &Path, why: impl Into<String>) -> SysError {
        SysError::BadFile { path: path.to_path_buf(), why: why.into() }
    }

    /// A program's run that failed: its command line and its standard error.
    pub fn refused(command: impl Into<String>, stderr: &[u8]) -> SysError {
        SysError::Refused {
            command: command.into(),
            said: String::from_utf8_lossy(stderr).trim().to_string(),
            hint: "",
        }
    }
}

/// Names what the lab was doing when an I/O call failed.
pub trait Doing<T> {
    /// `what` is built only on failure.
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, SysError>;
    /// The failure is about the file or directory at `path`.
    fn at(self, path: &Path) -> Result<T, SysError>;
}

impl<T> Doing<T> for std::io::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, SysError> {
        self.map_err(|source| SysError::Io { what: what(), source })
    }

    fn at(self, path: &Path) -> Result<T, SysError> {
        self.doing(|| path.display().to_string())
    }
}

/// The last OS error, for calls made through `libc`.
pub fn last_os_error(what: impl Into<String>) -> SysError {
    SysError::Io { what: what.into(), source: std::io::Error::last_os_error() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_where_and_what() {
        let missing = std::fs::read("/nonexistent/anyedge").at(Path::new("/nonexistent/anyedge")).unwrap_err();
        assert!(missing.to_string().starts_with("/nonexistent/anyedge: "), "{missing}");
        assert!(matches!(missing, SysError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound));
        let refused = SysError::refused("ip link del nothing", b"Cannot find device \"nothing\"\n");
        assert_eq!(refused.to_string(), "ip link del nothing: Cannot find device \"nothing\"");
        let bad = SysError::bad_file(Path::new("/lab/state.json"), "not JSON");
        assert_eq!(bad.to_string(), "/lab/state.json: not JSON");
    }
}

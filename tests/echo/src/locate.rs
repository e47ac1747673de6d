//! Where the `activator-echo` binary is, for the programs that start it as a process: the
//! activator's tests and benchmarks and kube-sim. It does not build the binary: cargo builds a
//! package's binaries only for that package's own tests, so a caller in another package relies
//! on it having been built (`cargo nextest run --workspace` does, through this crate's tests).

use std::path::{Path, PathBuf};

/// The binary's file name.
pub const BINARY: &str = "activator-echo";

/// The environment variable that, when set, names the binary to use.
pub const BINARY_ENV: &str = "ACTIVATOR_ECHO_BIN";

/// The binary was not found.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the echo backend `activator-echo` is not built: it is not in ${BINARY_ENV}, next to {exe} or one directory up, or on PATH; build it with `cargo build -p activator-echo` (`cargo build --release -p activator-echo` for benchmarks), or run the whole workspace's tests, which build it"
)]
pub struct NotBuilt {
    /// The running executable the search started from.
    pub exe: String,
}

/// Finds the binary: `$ACTIVATOR_ECHO_BIN` when set; else next to the running executable or
/// one directory up (cargo puts a test or benchmark executable in `target/PROFILE/deps` and
/// binaries in `target/PROFILE`); else on `PATH`.
///
/// # Errors
/// [`NotBuilt`], whose message names the command that builds it.
pub fn locate() -> Result<PathBuf, NotBuilt> {
    if let Some(explicit) = std::env::var_os(BINARY_ENV) {
        return Ok(PathBuf::from(explicit));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let beside = exe.ancestors().skip(1).take(2).map(Path::to_path_buf);
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    beside
        .chain(on_path)
        .map(|dir| dir.join(BINARY))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| NotBuilt {
            exe: exe.display().to_string(),
        })
}

//! One local replica: its supervisor task starts the command, forwards its output to the log,
//! probes it until ready, publishes it, restarts it if it exits while wanted, and stops it
//! (drain, SIGTERM to its process group, SIGKILL after the grace period) when told to.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::ReadySet;
use crate::provider::probe::probe;
use crate::spec::ProcessSpec;

/// Time between readiness probes of a starting replica, once it has been starting for a while.
pub(crate) const PROBE_PERIOD: Duration = Duration::from_millis(20);
/// Pause between probes during a replica's first [`EAGER_PROBING`]: a process that listens within
/// milliseconds is found within a millisecond, not a whole period later. A refused connect on
/// loopback costs microseconds.
const EAGER_PROBE_PAUSE: Duration = Duration::from_millis(1);
const EAGER_PROBING: Duration = Duration::from_millis(50);
/// First pause before restarting a replica that exited; doubles up to [`MAX_RESTART_BACKOFF`].
const FIRST_RESTART_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(5);
/// Failures before turning ready, in a row, after which the route is reported failing.
const CRASH_LOOP: u32 = 3;
/// A replica that ran this long before exiting restarts without backoff.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// What a supervisor needs.
pub(crate) struct Replica {
    pub(crate) id: u64,
    pub(crate) spec: ProcessSpec,
    pub(crate) ready: Arc<ReadySet>,
    pub(crate) stop: watch::Receiver<bool>,
    /// The replica's last line of output, for failure reports.
    pub(crate) last_output: Arc<Mutex<String>>,
}

enum Outcome {
    Stopped,
    /// It exited (or could not start) before it was ready.
    Failed(String),
    /// It exited after serving.
    Exited(String),
}

impl Replica {
    /// Runs the replica until told to stop. A replica that fails before turning ready
    /// [`CRASH_LOOP`] times in a row is reported as failing, so requests are refused at once
    /// instead of waiting out their cold-start timeout, until the next attempt.
    pub(crate) async fn supervise(self) {
        let mut backoff = FIRST_RESTART_BACKOFF;
        let mut failed_in_a_row = 0;
        loop {
            let started = tokio::time::Instant::now();
            let outcome = match self.start() {
                Ok((child, addr)) => self.run(child, addr).await,
                Err(problem) => Outcome::Failed(problem),
            };
            let problem = match outcome {
                Outcome::Stopped => return,
                Outcome::Failed(problem) => {
                    failed_in_a_row += 1;
                    problem
                }
                Outcome::Exited(problem) => {
                    failed_in_a_row = 0;
                    problem
                }
            };
            if started.elapsed() >= STABLE_RUN {
                backoff = FIRST_RESTART_BACKOFF;
            }
            let last_output = self
                .last_output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            tracing::warn!(route = %self.ready.route_id(), replica = self.id, %problem, last_output, restart_in_ms = backoff.as_millis() as u64, "replica failed; restarting");
            let problem = if last_output.is_empty() {
                format!("replica {}: {problem}", self.id)
            } else {
                format!("replica {}: {problem}; last output: {last_output}", self.id)
            };
            if failed_in_a_row >= CRASH_LOOP {
                self.ready.route_failing(
                    format!("{problem} ({failed_in_a_row} failures before turning ready in a row)"),
                    backoff,
                );
            } else {
                self.ready.route_problem(problem);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                () = self.stopped() => return,
            }
            backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
        }
    }

    /// Completes once the replica is told to stop.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    fn start(&self) -> Result<(Child, SocketAddr), String> {
        let port = free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
        let port_text = port.to_string();
        let args: Vec<String> = self
            .spec
            .command
            .iter()
            .map(|a| a.replace("{port}", &port_text))
            .collect();
        let mut command = Command::new(&args[0]);
        command
            .args(&args[1..])
            .env("PORT", &port_text)
            .envs(&self.spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        set_child_process_flags(&mut command);
        if let Some(dir) = &self.spec.workdir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", args[0]))?;
        let route = self.ready.route_id().to_owned();
        if let Some(out) = child.stdout.take() {
            let last = Arc::clone(&self.last_output);
            tokio::spawn(forward_lines(out, route.clone(), self.id, "stdout", last));
        }
        if let Some(err) = child.stderr.take() {
            let last = Arc::clone(&self.last_output);
            tokio::spawn(forward_lines(err, route.clone(), self.id, "stderr", last));
        }
        tracing::info!(route = %route, replica = self.id, pid = child.id(), port, "replica started");
        Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
    }

    async fn run(&self, mut child: Child, addr: SocketAddr) -> Outcome {
        let path = self.spec.ready_path.as_deref();
        let started = tokio::time::Instant::now();
        // Starting: probe until ready, every millisecond at first, then every period.
        loop {
            match probe(addr, path).await {
                Ok(()) => break,
                Err(problem) => self.ready.route_waiting(format!(
                    "replica {} (pid {}) not ready after {}ms: {problem}",
                    self.id,
                    child.id().unwrap_or(0),
                    started.elapsed().as_millis()
                )),
            }
            tokio::select! {
                status = child.wait() => return Outcome::Failed(exit_text(status)),
                () = self.stopped() => {
                    self.terminate(&mut child).await;
                    return Outcome::Stopped;
                }
                _ = tokio::time::sleep(if started.elapsed() < EAGER_PROBING { EAGER_PROBE_PAUSE } else { PROBE_PERIOD }) => {}
            }
        }
        tracing::info!(route = %self.ready.route_id(), replica = self.id, %addr, startup_ms = started.elapsed().as_millis() as u64, "replica ready");
        self.ready.insert(self.id, addr);
        // Running: until it exits or is stopped.
        tokio::select! {
            status = child.wait() => {
                self.ready.remove(self.id);
                Outcome::Exited(exit_text(status))
            }
            () = self.stopped() => {
                self.ready.retire(self.id, addr, self.spec.stop_grace).await;
                self.terminate(&mut child).await;
                Outcome::Stopped
            }
        }
    }

    async fn terminate(&self, child: &mut Child) {
        let Some(pid) = child.id() else { return };
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let grace = self.spec.stop_grace;
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => exit_text(status),
            Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait().await;
                format!("killed after {}ms grace", grace.as_millis())
            }
        };
        // The group may hold children of the command; none should outlive the replica.
        let _ = killpg(group, Signal::SIGKILL);
        tracing::info!(route = %self.ready.route_id(), replica = self.id, pid, %status, "replica stopped");
    }
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => format!("process {status}"),
        Err(e) => format!("process wait failed: {e}"),
    }
}

fn free_port() -> std::io::Result<u16> {
    // The port is free when we look; a race with another process binding it in between ends in
    // a replica that exits (address in use) and is restarted on another port.
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Sets two process flags in the replica's process before it execs its command.
///
/// It dies with the activator, even when the activator is killed with SIGKILL and cannot stop
/// it: Linux sends the child SIGKILL when its parent thread exits (`PR_SET_PDEATHSIG`). The
/// replica is spawned from a runtime worker thread, which lives as long as the activator.
/// Children the replica forks itself are not covered (a command that forks should `exec` its
/// server); on an orderly stop the whole process group is signalled.
///
/// And it runs with transparent huge pages as the activator found them, not as the activator
/// set them for itself ([`crate::huge_pages`]).
fn set_child_process_flags(command: &mut Command) {
    let parent = std::process::id();
    let set_death_signal = move || {
        nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL))?;
        crate::huge_pages::restore_in_child()?;
        // The parent may have died before the death signal was set: then nobody would send it.
        if nix::unistd::getppid().as_raw() as u32 != parent {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes at most three system calls (prctl twice, getppid) and
    // allocates nothing (its error is a raw OS error, and nix's `Errno` converts to one without
    // allocating).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(set_death_signal);
    }
}

/// Longest line of replica output logged as one; longer ones are logged in pieces this long.
const MAX_LINE: usize = 16 * 1024;

/// Logs a replica's output line by line, at DEBUG under the target `activator::replica` (an
/// access log is one line per request), keeping the last line for failure reports. Bytes that
/// are not UTF-8 are replaced, and a line is never buffered beyond [`MAX_LINE`].
async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    route: String,
    replica: u64,
    which: &'static str,
    last: Arc<Mutex<String>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let emit = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.is_empty() {
            tracing::debug!(target: "activator::replica", route = %route, replica, stream = which, "{text}");
            *last.lock().unwrap_or_else(|e| e.into_inner()) = text.to_owned();
        }
        line.clear();
    };
    loop {
        let buffer = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buffer) => buffer,
        };
        let (taken, complete) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buffer.len(), false),
        };
        let room = MAX_LINE - line.len();
        let kept = taken.min(room);
        line.extend_from_slice(&buffer[..kept]);
        reader.consume(kept);
        if complete && kept == taken || line.len() >= MAX_LINE {
            emit(&mut line);
        }
    }
    emit(&mut line);
}

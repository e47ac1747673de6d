//! Pod processes: choosing the command for an image, allocating the pod's loopback address,
//! spawning the process in its own process group with the pod's environment (see `env`) and a
//! log file, and the table of live processes used to signal, crash and finally kill them all.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};

use super::env;
use crate::config::{ECHO_IMAGE, SimConfig};
use crate::meta;

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// No mapping for the image and no `command` in the container.
    #[error("image {0:?} has no command mapping (use --image NAME=COMMAND)")]
    UnknownImage(String),
    /// The echo server binary was not found.
    #[error(transparent)]
    EchoMissing(#[from] activator_echo::NotBuilt),
    /// Spawning failed.
    #[error("starting {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The image name without registry default, tag or digest.
fn image_name(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let image = match image[last_slash..].rfind(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    image
        .strip_prefix("docker.io/")
        .map(|i| i.strip_prefix("library/").unwrap_or(i))
        .unwrap_or(image)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The echo server's command: `activator-echo` where [`activator_echo::locate`] finds it.
fn echo_command() -> Result<String, StartError> {
    let path = activator_echo::locate()?;
    Ok(shell_quote(&path.to_string_lossy()))
}

/// What runs for a container: a shell snippet (with `{ip}`, `{port}`, `{name}` and
/// `{namespace}` still to fill) followed by words that are expanded (`$(VAR)`) and quoted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerCommand {
    shell: String,
    words: Vec<String>,
}

/// The command for a container. A mapped image (or the echo image) stands for the image's
/// entrypoint, so the container's `args` follow it (its `command` is not used); any other image
/// runs the container's own `command` and `args`.
///
/// # Errors
/// When the image is unknown and the container names no command, or the echo binary is missing.
pub(crate) fn command_for(
    config: &SimConfig,
    container: &Value,
) -> Result<ContainerCommand, StartError> {
    let image = meta::str_at(container, "/image");
    let name = image_name(image);
    let strings = |field: &str| -> Vec<String> {
        container
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let mapped = config
        .images
        .iter()
        .find(|m| m.image == image || m.image == name)
        .map(|m| m.command.clone());
    let shell = match mapped {
        Some(command) => command,
        None if name == ECHO_IMAGE => {
            let echo = match &config.echo_command {
                Some(command) => command.clone(),
                None => echo_command()?,
            };
            format!("exec {echo} --exit-on-stdin-eof")
        }
        None => {
            let mut words = strings("command");
            words.extend(strings("args"));
            if words.is_empty() {
                return Err(StartError::UnknownImage(image.to_string()));
            }
            return Ok(ContainerCommand {
                shell: "exec".to_string(),
                words,
            });
        }
    };
    Ok(ContainerCommand {
        shell,
        words: strings("args"),
    })
}

/// Everything needed to start one container process.
pub(crate) struct Launch<'a> {
    /// What to run.
    pub command: &'a ContainerCommand,
    /// The pod (for its name, namespace and the downward API).
    pub pod: &'a Value,
    /// The container spec (for `env` and `ports`).
    pub container: &'a Value,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Log file.
    pub log: &'a Path,
    /// The kubeconfig the container gets in `KUBECONFIG`.
    pub kubeconfig: &'a Path,
}

/// Starts a container's process in a new process group. Its stdin is a pipe kept open by the
/// returned child, so a helper that exits on stdin EOF dies with the simulator.
///
/// # Errors
/// When the process cannot be spawned.
pub(crate) fn spawn(launch: &Launch<'_>) -> Result<Child, StartError> {
    let port = launch
        .container
        .pointer("/ports/0/containerPort")
        .and_then(Value::as_i64)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let defined = env::container_env(launch.pod, launch.container, launch.ip);
    let mut command = launch
        .command
        .shell
        .replace("{ip}", &launch.ip.to_string())
        .replace("{port}", &port)
        .replace("{name}", meta::name(launch.pod))
        .replace("{namespace}", meta::namespace(launch.pod));
    for word in &launch.command.words {
        command.push(' ');
        command.push_str(&shell_quote(&env::expand(word, &defined)));
    }
    let spawn_error = |source| StartError::Spawn {
        command: command.clone(),
        source,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(launch.log)
        .map_err(spawn_error)?;
    let log_err = log.try_clone().map_err(spawn_error)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&command)
        .envs(env::node_env(launch.pod, launch.ip, launch.kubeconfig))
        .envs(defined)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(spawn_error)
}

struct Running {
    pgid: i32,
    log: PathBuf,
}

/// The live pod processes, by namespace and pod name.
#[derive(Default)]
pub struct ProcessTable {
    // Held only to read or edit the map; never across an await.
    running: Mutex<HashMap<(String, String), Running>>,
    logs: Mutex<HashMap<(String, String), PathBuf>>,
    addresses: Mutex<AddressPool>,
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct AddressPool {
    in_use: HashSet<u8>,
    next: u8,
}

impl ProcessTable {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a started process; false (and the process group killed) once the table is
    /// closed by [`ProcessTable::kill_all`], so nothing outlives the simulator.
    pub fn register(&self, namespace: &str, name: &str, pgid: u32, log: &Path) -> bool {
        let key = (namespace.to_string(), name.to_string());
        let pgid = i32::try_from(pgid).unwrap_or(0);
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), log.to_path_buf());
        self.running().insert(
            key,
            Running {
                pgid,
                log: log.to_path_buf(),
            },
        );
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            self.kill_all();
            return false;
        }
        true
    }

    /// Forgets a process that has exited.
    pub fn unregister(&self, namespace: &str, name: &str) {
        self.running()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Sends a signal to a pod's whole process group.
    pub fn signal(&self, namespace: &str, name: &str, signal: Signal) -> bool {
        let pgid = self
            .running()
            .get(&(namespace.to_string(), name.to_string()))
            .map(|r| r.pgid);
        match pgid {
            Some(pgid) if pgid > 0 => killpg(Pid::from_raw(pgid), signal).is_ok(),
            _ => false,
        }
    }

    /// Kills a pod's process as a crash would (SIGKILL); the kubelet then restarts it.
    pub fn crash(&self, namespace: &str, name: &str) -> bool {
        self.signal(namespace, name, Signal::SIGKILL)
    }

    /// The log of a pod's process so far.
    pub fn log(&self, namespace: &str, name: &str) -> String {
        let key = (namespace.to_string(), name.to_string());
        let path = self.running().get(&key).map(|r| r.log.clone()).or_else(|| {
            self.logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned()
        });
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// SIGKILLs every live process group, and every one registered from now on.
    pub fn kill_all(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        for running in self.running().values() {
            if running.pgid > 0 {
                let _ = killpg(Pid::from_raw(running.pgid), Signal::SIGKILL);
            }
        }
    }

    /// Takes a free address in `network`'s /24 (from .2 to .254) where `port` can be bound,
    /// handing addresses out in rotation so a freed one is not reused at once.
    pub fn allocate_address(&self, network: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
        let mut pool = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let [a, b, c, _] = network.octets();
        for _ in 0..253 {
            pool.next = if pool.next < 2 || pool.next >= 254 {
                2
            } else {
                pool.next + 1
            };
            let host = pool.next;
            if pool.in_use.contains(&host) {
                continue;
            }
            let ip = Ipv4Addr::new(a, b, c, host);
            // Another simulator (or anything else) may hold this address and port.
            if port != 0 && std::net::TcpListener::bind((ip, port)).is_err() {
                continue;
            }
            pool.in_use.insert(host);
            return Some(ip);
        }
        None
    }

    /// Returns an address to the pool.
    pub fn release_address(&self, ip: Ipv4Addr) {
        let mut pool = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        pool.in_use.remove(&ip.octets()[3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_lose_registry_tag_and_digest() {
        assert_eq!(
            image_name("mendhak/http-https-echo:31"),
            "mendhak/http-https-echo"
        );
        assert_eq!(image_name("docker.io/library/nginx:1.27"), "nginx");
        assert_eq!(
            image_name("localhost:5000/app@sha256:abc"),
            "localhost:5000/app"
        );
    }

    #[test]
    fn addresses_are_distinct_until_released() {
        let table = ProcessTable::default();
        let net = Ipv4Addr::new(127, 77, 1, 0);
        let a = table.allocate_address(net, 0);
        let b = table.allocate_address(net, 0);
        assert!(a.is_some() && a != b);
    }
}

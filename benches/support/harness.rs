//! What the process-level benchmarks share: the binaries under test, child processes pinned to
//! cores, free ports, a minimal HTTP/1.1 client for control requests, and readings of a
//! process's CPU time and memory from `/proc`.
//!
//! Everything here talks to 127.0.0.1 only.

#![allow(dead_code)] // each bench uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The activator binary: `$BENCH_ACTIVATOR_BIN` if set (to compare another build), else the one
/// `cargo bench` built with the bench profile.
pub fn activator_binary() -> String {
    std::env::var("BENCH_ACTIVATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_activator").to_owned())
}

/// The echo backend binary, from the workspace's `activator-echo` package built with the same
/// profile (`cargo build --release -p activator-echo`); stops the benchmark naming that command
/// when it is missing.
pub fn echo_binary() -> &'static str {
    static ECHO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ECHO.get_or_init(|| match activator_echo::locate() {
        Ok(path) => path.display().to_string(),
        Err(missing) => {
            eprintln!("error: {missing}");
            std::process::exit(2)
        }
    })
}

/// Stops the benchmark with a message naming the missing tool, unless `tool` is on the PATH.
pub fn require_tool(tool: &str, install: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        eprintln!("error: this benchmark needs `{tool}`, which is not on the PATH; install it with: {install}");
        std::process::exit(2)
    })
}

/// `tool`'s path if it is on the PATH (or in /usr/sbin, where Debian puts daemons).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// `program args`, restricted to `cpus` (a `taskset -c` list) when given.
pub fn pinned(cpus: Option<&str>, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(program).args(args);
            command
        }
        None => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Spawns `command`, its output going to `log` (or nowhere).
    pub fn spawn(name: &str, mut command: Command, log: Option<&Path>) -> Proc {
        command.stdin(Stdio::null());
        match log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("log file");
                command
                    .stdout(file.try_clone().expect("log file"))
                    .stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `grace` for the exit, then kills.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    /// SIGTERM first, so a master process (nginx) stops its workers instead of orphaning them,
    /// then SIGKILL after two seconds.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until something accepts connections on `addr`; on a timeout, stops the benchmark
/// showing `log` (the listener's output).
pub fn wait_listening(addr: SocketAddr, timeout: Duration, log: &Path) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let output = std::fs::read_to_string(log).unwrap_or_default();
            panic!("nothing listens on {addr} after {timeout:?}; its output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A response read whole over a fresh connection.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` with `Host: host`, over a fresh connection closed after the answer.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))?;
    let body = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => raw[end + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok(Reply { status, body })
}

/// Waits for a line containing `needle` in the file at `path` (a child's log) and returns it.
pub fn wait_for_line(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(file) = std::fs::File::open(path)
            && let Some(line) = BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .find(|line| line.contains(needle))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {} after {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields of `/proc/PID/stat` after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &text[text.rfind(')')? + 2..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// User plus system CPU time of `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            // utime and stime are fields 14 and 15; index 0 here is field 3.
            f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_fields(child).is_some_and(|f| f[1] == pid.to_string()))
        .collect()
}

/// The worker processes of a master `pid` (nginx), once it has started them.
pub fn workers_of(pid: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while children(pid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The master forks its workers one after another.
    std::thread::sleep(Duration::from_millis(200));
    children(pid)
}

/// nginx running `config(port)` on a free port of 127.0.0.1 (pinned to `cpus` if given), once it
/// listens; its log is `NAME.log` in `scratch`.
pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// The master and its workers: the processes whose CPU is nginx's.
    pub cpu_pids: Vec<u32>,
}

impl Nginx {
    pub fn start(
        nginx: &Path,
        scratch: &Scratch,
        name: &str,
        cpus: Option<&str>,
        config: impl FnOnce(u16) -> String,
    ) -> Nginx {
        let port = free_port();
        let conf = scratch.path(&format!("{name}.conf"));
        std::fs::write(&conf, config(port)).expect("nginx config");
        let log = scratch.path(&format!("{name}.log"));
        let dir = scratch.dir().to_string_lossy();
        let conf = conf.to_string_lossy();
        let args = ["-p", &dir, "-e", "stderr", "-c", &conf];
        let proc = Proc::spawn(name, pinned(cpus, nginx, &args), Some(&log));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr, Duration::from_secs(10), &log);
        let mut cpu_pids = vec![proc.pid()];
        cpu_pids.extend(workers_of(proc.pid()));
        Nginx {
            proc,
            addr,
            cpu_pids,
        }
    }
}

/// A line of `/proc/PID/status` such as `VmRSS`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with(key) && line[key.len()..].starts_with(':'))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A temporary directory removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("activator-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An activator process with its log, started from `toml` (which must set `listen` and
/// `admin_listen`).
pub struct ActivatorProc {
    pub proc: Proc,
    pub log: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl ActivatorProc {
    /// Starts the activator on two free ports with `routes` (TOML `[[routes]]` tables and any
    /// top-level keys before them), pinned to `cpus`, and waits until `/readyz` answers 200.
    pub fn start(scratch: &Scratch, top: &str, routes: &str, cpus: Option<&str>) -> ActivatorProc {
        ActivatorProc::start_binary(&activator_binary(), scratch, top, routes, cpus)
    }

    /// Like [`ActivatorProc::start`], running `binary` (another build, to compare).
    pub fn start_binary(
        binary: &str,
        scratch: &Scratch,
        top: &str,
        routes: &str,
        cpus: Option<&str>,
    ) -> ActivatorProc {
        ActivatorProc::launch(binary, scratch, &format!("{top}\n{routes}"), cpus, &[], &[])
    }

    /// Starts the activator in Kubernetes mode (`--kube` and `args`) against the cluster
    /// `kubeconfig` names, with `top` as its config file (besides the listeners) and `RUST_LOG`
    /// set to `log`, and waits until `/readyz` answers 200 (its watch caches have synced).
    pub fn start_kube(
        scratch: &Scratch,
        top: &str,
        kubeconfig: &Path,
        args: &[&str],
        log: &str,
    ) -> ActivatorProc {
        let mut all_args = vec!["--kube"];
        all_args.extend_from_slice(args);
        let kubeconfig = kubeconfig.to_string_lossy();
        let env = [("KUBECONFIG", kubeconfig.as_ref()), ("RUST_LOG", log)];
        ActivatorProc::launch(&activator_binary(), scratch, top, None, &all_args, &env)
    }

    /// Writes the config file (`config`, after the two listeners on free ports), starts
    /// `binary` with it, `args` and `env` (`RUST_LOG=info` unless `env` says otherwise), logging
    /// JSON, and waits until `/readyz` answers 200.
    fn launch(
        binary: &str,
        scratch: &Scratch,
        config: &str,
        cpus: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ActivatorProc {
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = scratch.path("activator.toml");
        std::fs::write(
            &path,
            format!("listen = \"{proxy}\"\nadmin_listen = \"{admin}\"\n{config}"),
        )
        .expect("writing the activator config");
        let log = scratch.path("activator.log");
        let config_arg = path.to_string_lossy().into_owned();
        let mut all_args = vec!["--config", &config_arg, "--log-format", "json"];
        all_args.extend_from_slice(args);
        let mut command = pinned(cpus, binary, &all_args);
        command.env("RUST_LOG", "info");
        command.envs(env.iter().copied());
        let proc = Proc::spawn("activator", command, Some(&log));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_get(admin, "admin", "/readyz").is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "the activator did not become ready; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        ActivatorProc {
            proc,
            log,
            proxy,
            admin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A TOML `[[routes]]` table whose replicas are the echo backend.
pub fn echo_route(name: &str, hosts: &[&str], settings: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        "[[routes]]\nname = \"{name}\"\nhosts = [{}]\n{settings}\n[routes.process]\ncommand = [{:?}, \"--port\", \"{{port}}\"]\nstop_grace = \"2s\"\n",
        hosts.join(", "),
        echo_binary(),
    )
}

/// Value at quantile `q` (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median of `values` (not necessarily sorted).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// Where benchmark results go: `target/bench-results/NAME.json` next to the build output.
pub fn results_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-results");
    std::fs::create_dir_all(&dir).expect("results directory");
    dir.join(format!("{name}.json"))
}

/// Whether the bench binary was started by `cargo bench` in list or test mode (nothing to run).
pub fn listing_only() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}

//! The server's settings: flags first, then the environment a replica or a pod gets (`PORT`,
//! `HTTP_PORT`, `POD_IP`, `HOSTNAME`), then defaults. Parsing only; nothing here listens.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The usage line printed with a bad argument.
pub const USAGE: &str = "usage: activator-echo [--port N] [--bind ADDR] [--startup-delay-ms MS] [--startup-jitter-ms MS] [--term-delay-ms MS] [--exit-on-stdin-eof]";

/// What the server does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Address to listen on: `--bind`, else `$POD_IP`, else 127.0.0.1.
    pub bind: IpAddr,
    /// Port to listen on: `--port`, else `$PORT`, else `$HTTP_PORT`, else 8080. 0 picks one.
    pub port: u16,
    /// Wait this long before listening (`--startup-delay-ms`), like a slow replica.
    pub startup_delay: Duration,
    /// Wait up to this much longer, drawn afresh by each process (`--startup-jitter-ms`), like
    /// replicas whose start varies.
    pub startup_jitter: Duration,
    /// Keep serving this long after SIGTERM, then exit 0 (`--term-delay-ms`); without it
    /// SIGTERM ends the process at once.
    pub term_delay: Option<Duration>,
    /// Exit when standard input closes (`--exit-on-stdin-eof`).
    pub exit_on_stdin_eof: bool,
    /// The name answered as `os.hostname`: `$HOSTNAME`, else `activator-echo`.
    pub hostname: String,
}

/// A flag or environment variable that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// An argument the server does not know.
    #[error("unknown argument {0:?}")]
    Unknown(String),
    /// A flag given last, without its value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value that does not parse.
    #[error("{name}: invalid value {value:?}: expected {expected}")]
    Invalid {
        /// The flag or environment variable.
        name: String,
        /// What it held.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
}

fn parse<T: std::str::FromStr>(
    name: &str,
    value: &str,
    expected: &'static str,
) -> Result<T, OptionsError> {
    value.parse().map_err(|_| OptionsError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        expected,
    })
}

/// A variable's value, parsed, when set and not empty.
fn from_env<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    expected: &'static str,
) -> Result<Option<T>, OptionsError> {
    env(name)
        .filter(|v| !v.is_empty())
        .map(|v| parse(name, &v, expected))
        .transpose()
}

impl Options {
    /// Reads `args` (without the program name), looking up environment variables with `env`.
    ///
    /// # Errors
    /// [`OptionsError`] naming the argument or variable at fault.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, OptionsError> {
        let (mut port, mut bind) = (None, None);
        let mut options = Options {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            startup_delay: Duration::ZERO,
            startup_jitter: Duration::ZERO,
            term_delay: None,
            exit_on_stdin_eof: false,
            hostname: env("HOSTNAME")
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "activator-echo".to_owned()),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(OptionsError::MissingValue(arg.clone()));
            match arg.as_str() {
                "--port" => port = Some(parse(&arg, &value()?, "a port number")?),
                "--bind" => bind = Some(parse(&arg, &value()?, "an IP address")?),
                "--startup-delay-ms" => {
                    let ms = parse(&arg, &value()?, "milliseconds")?;
                    options.startup_delay = Duration::from_millis(ms);
                }
                "--startup-jitter-ms" => {
                    let ms = parse(&arg, &value()?, "milliseconds")?;
                    options.startup_jitter = Duration::from_millis(ms);
                }
                "--term-delay-ms" => {
                    let ms = parse(&arg, &value()?, "milliseconds")?;
                    options.term_delay = Some(Duration::from_millis(ms));
                }
                "--exit-on-stdin-eof" => options.exit_on_stdin_eof = true,
                _ => return Err(OptionsError::Unknown(arg)),
            }
        }
        options.port = match port {
            Some(port) => port,
            None => match from_env(&env, "PORT", "a port number")? {
                Some(port) => port,
                None => from_env(&env, "HTTP_PORT", "a port number")?.unwrap_or(8080),
            },
        };
        options.bind = match bind {
            Some(bind) => bind,
            None => from_env(&env, "POD_IP", "an IP address")?.unwrap_or(options.bind),
        };
        Ok(options)
    }

    /// Where to listen.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The wait before listening: the startup delay plus a part of the jitter drawn uniformly
    /// from `fraction` (0 to 1).
    pub fn startup_wait(&self, fraction: f64) -> Duration {
        self.startup_delay + self.startup_jitter.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Options, OptionsError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(args.iter().map(|a| a.to_string()), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn flags_win_over_the_environment() {
        let options = parse_with(
            &["--port", "9000", "--bind", "127.0.0.9"],
            &[("PORT", "1"), ("HTTP_PORT", "2"), ("POD_IP", "127.0.0.8")],
        )
        .unwrap();
        assert_eq!(options.address(), "127.0.0.9:9000".parse().unwrap());
    }

    #[test]
    fn a_pod_listens_on_its_address_and_http_port() {
        let options = parse_with(&[], &[("HTTP_PORT", "80"), ("POD_IP", "127.3.4.5")]).unwrap();
        assert_eq!(options.address(), "127.3.4.5:80".parse().unwrap());
    }

    #[test]
    fn a_replica_listens_on_loopback_at_its_port() {
        let options = parse_with(&[], &[("PORT", "4321"), ("HTTP_PORT", "80")]).unwrap();
        assert_eq!(options.address(), "127.0.0.1:4321".parse().unwrap());
        assert_eq!(parse_with(&[], &[]).unwrap().port, 8080);
    }

    #[test]
    fn delays_and_stdin_watching_come_from_flags() {
        let options = parse_with(
            &[
                "--startup-delay-ms",
                "300",
                "--startup-jitter-ms",
                "100",
                "--term-delay-ms",
                "2000",
                "--exit-on-stdin-eof",
            ],
            &[("HOSTNAME", "web-1")],
        )
        .unwrap();
        assert_eq!(options.startup_delay, Duration::from_millis(300));
        assert_eq!(options.startup_wait(0.0), Duration::from_millis(300));
        assert_eq!(options.startup_wait(0.5), Duration::from_millis(350));
        assert_eq!(options.term_delay, Some(Duration::from_secs(2)));
        assert!(options.exit_on_stdin_eof);
        assert_eq!(options.hostname, "web-1");
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(
            parse_with(&["--verbose"], &[]),
            Err(OptionsError::Unknown("--verbose".into()))
        );
        assert_eq!(
            parse_with(&["--port"], &[]),
            Err(OptionsError::MissingValue("--port".into()))
        );
        let error = parse_with(&[], &[("HTTP_PORT", "eighty")]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("HTTP_PORT: invalid value \"eighty\"")
        );
    }
}

//! How a simulator is set up: listen address, image-to-command mappings, the time scale applied
//! to every probe period, delay, grace period and back-off, the pod address block, and the
//! watch history size.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The image the echo server stands in for, by default.
pub const ECHO_IMAGE: &str = "mendhak/http-https-echo";

/// A container image run as a local command.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMapping {
    /// Image name without tag or digest (`mendhak/http-https-echo`); a name with a tag matches
    /// only that tag.
    pub image: String,
    /// Shell command (run by `/bin/sh -c`) with `{ip}`, `{port}`, `{name}` and `{namespace}`
    /// replaced by the pod's address, first container port, name and namespace. It stands for
    /// the image's entrypoint: the container's `args` follow it, shell-quoted.
    pub command: String,
}

impl ImageMapping {
    /// Parses `NAME=COMMAND`.
    ///
    /// # Errors
    /// When there is no `=` or either side is empty.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec.split_once('=') {
            Some((image, command)) if !image.trim().is_empty() && !command.trim().is_empty() => {
                Ok(Self {
                    image: image.trim().to_string(),
                    command: command.trim().to_string(),
                })
            }
            _ => Err(format!("expected NAME=COMMAND, got {spec:?}")),
        }
    }
}

/// Configuration of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address of the API server; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Image mappings, consulted before the built-in echo mapping.
    pub images: Vec<ImageMapping>,
    /// Factor applied to every Kubernetes duration (probe delays and periods, grace periods,
    /// restart back-off): 1.0 is real time, 0.01 is a hundred times faster.
    pub time_scale: f64,
    /// Pods get addresses `a.b.c.2`, `a.b.c.3`, … in this /24 (the last octet is ignored).
    pub pod_network: Ipv4Addr,
    /// Changes kept for watches to resume from; older resumes get 410 Expired.
    pub history_limit: usize,
    /// Where to write the kubeconfig; a file in the work directory when `None`.
    pub kubeconfig_path: Option<PathBuf>,
    /// Directory for pod logs and the kubeconfig; a fresh temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// Command for the echo image; `activator-echo` as [`activator_echo::locate`] finds it
    /// (`$ACTIVATOR_ECHO_BIN`, next to the running executable or one directory up, `PATH`)
    /// when `None`.
    pub echo_command: Option<String>,
}

impl Default for SimConfig {
    /// Port 0 on 127.0.0.1, real time, a random pod block in 127.0.0.0/8 so that simulators
    /// running side by side do not share addresses.
    fn default() -> Self {
        let [b, c]: [u8; 2] = rand::random();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            images: Vec::new(),
            time_scale: 1.0,
            pod_network: Ipv4Addr::new(127, b.clamp(1, 254), c, 0),
            history_limit: 1000,
            kubeconfig_path: None,
            work_dir: None,
            echo_command: None,
        }
    }
}

impl SimConfig {
    /// A Kubernetes duration in seconds, scaled.
    pub fn scaled(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64((seconds * self.time_scale).max(0.0))
    }

    /// Sets the time scale.
    #[must_use]
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Adds an image mapping.
    #[must_use]
    pub fn image(mut self, image: &str, command: &str) -> Self {
        self.images.push(ImageMapping {
            image: image.to_string(),
            command: command.to_string(),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_mappings_parse_from_the_command_line_form() {
        let m = ImageMapping::parse("nginx=python3 -m http.server --bind {ip} {port}");
        assert_eq!(m.map(|m| m.image), Ok("nginx".to_string()));
        assert!(ImageMapping::parse("nginx").is_err());
    }
}

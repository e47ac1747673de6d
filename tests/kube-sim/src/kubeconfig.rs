//! Kubeconfig files pointing at a simulator: the one a [`crate::Sim`] writes for tests and
//! `kubectl` (namespace `default`), and the one every pod gets in `KUBECONFIG` in place of an
//! in-cluster configuration (namespace: the pod's own, as in-cluster clients default to it).
//! Plain HTTP, no credentials.

use std::net::SocketAddr;
use std::path::Path;

/// A kubeconfig for the simulator at `address`, defaulting to `namespace`.
pub fn render(address: SocketAddr, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: http://{address}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: {namespace}\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\n"
    )
}

/// Writes [`render`]'s kubeconfig to `path`, creating its directory.
///
/// # Errors
/// When the directory or the file cannot be written.
pub fn write(path: &Path, address: SocketAddr, namespace: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, render(address, namespace))
}

//! The operator's policy for tenants' annotations in Kubernetes mode: which hosts a namespace may
//! claim, the ceilings on the settings it may ask for, and whose hand-written EndpointSlices are
//! believed. Annotations are written by tenants; this is what keeps one from reaching into
//! another's traffic or the activator's memory.
//!
//! Hosts: a route in namespace NS always answers its default host `NAME.NS.DOMAIN`, and may claim
//! any host under `NS.DOMAIN` (exact or wildcard). Any other host or wildcard needs a grant
//! (`[[host_grants]]`) naming NS, like Knative's ClusterDomainClaim or Gateway API's
//! `allowedRoutes`. A host under another namespace's `X.DOMAIN` is never allowed, grant or not,
//! and a granted wildcard over the domain itself (`*.DOMAIN`) still never serves a host under
//! another namespace's part of it ([`crate::routing`] enforces that on lookup).

use std::collections::HashSet;
use std::time::Duration;

use crate::spec::{HumanDuration, RouteSettings, normalise_host_name};

/// Ceilings on what a tenant's annotations may ask for; above them a value is clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    /// Held requests per route.
    pub max_queued: u64,
    /// Wait of a held request.
    pub cold_start_timeout: Duration,
    /// Wait for a response head.
    pub response_timeout: Duration,
    /// Replicas.
    pub max_scale: u32,
    /// Replicas a cold start asks for.
    pub activation_scale: u32,
}

impl Default for Ceilings {
    fn default() -> Ceilings {
        Ceilings {
            max_queued: 10_000,
            cold_start_timeout: Duration::from_secs(600),
            response_timeout: Duration::from_secs(3600),
            max_scale: 1_000,
            activation_scale: 1_000,
        }
    }
}

/// One setting brought down to its ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clamped {
    /// The setting's field (`max_queued`).
    pub(crate) field: &'static str,
    /// What was asked for.
    pub(crate) asked: String,
    /// The ceiling it got.
    pub(crate) ceiling: String,
}

impl Ceilings {
    /// Brings the settings a tenant asked for down to the ceilings; returns what was clamped.
    /// Settings not asked for come from the operator's defaults and are left alone.
    pub(crate) fn clamp(&self, asked: &mut RouteSettings) -> Vec<Clamped> {
        let mut clamped = Vec::new();
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(value) = asked.max_queued.filter(|v| *v > self.max_queued) {
            clamped.push(Clamped::new("max_queued", value, self.max_queued));
            asked.max_queued = Some(self.max_queued);
        }
        for (field, slot, ceiling) in [
            (
                "cold_start_timeout",
                &mut asked.cold_start_timeout,
                self.cold_start_timeout,
            ),
            (
                "response_timeout",
                &mut asked.response_timeout,
                self.response_timeout,
            ),
        ] {
            if let Some(value) = slot.filter(|v| v.0 > ceiling) {
                clamped.push(Clamped::new(field, human(value.0), human(ceiling)));
                *slot = Some(HumanDuration(ceiling));
            }
        }
        for (field, slot, ceiling) in [
            ("max_scale", &mut asked.max_scale, self.max_scale),
            (
                "activation_scale",
                &mut asked.activation_scale,
                self.activation_scale,
            ),
        ] {
            if let Some(value) = slot.filter(|v| *v > ceiling) {
                clamped.push(Clamped::new(field, value, ceiling));
                *slot = Some(ceiling);
            }
        }
        clamped
    }
}

impl Clamped {
    fn new(field: &'static str, asked: impl ToString, ceiling: impl ToString) -> Clamped {
        Clamped {
            field,
            asked: asked.to_string(),
            ceiling: ceiling.to_string(),
        }
    }
}

/// Hosts granted to one namespace beyond its own part of the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    /// The namespace.
    pub namespace: String,
    /// Host patterns: exact names, or `*.suffix` (which grants the suffix's subdomains, and
    /// wildcards under it).
    pub hosts: Vec<String>,
}

/// What the operator allows tenants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// The domain of default hosts.
    pub domain: String,
    /// Hosts granted per namespace.
    pub host_grants: Vec<HostGrant>,
    /// Ceilings on annotations.
    pub ceilings: Ceilings,
    /// Namespaces whose EndpointSlices are believed even when no EndpointSlice controller
    /// manages them (hand-written ones).
    pub unmanaged_slice_namespaces: HashSet<String>,
}

/// Why a host was refused to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It lies under another namespace's part of the domain.
    OtherNamespace,
    /// No grant gives it to the namespace.
    NotGranted,
}

impl Policy {
    /// Whether a route in `namespace` may answer `host` (normalised; `*.suffix` for wildcards).
    pub(crate) fn allows(&self, namespace: &str, host: &str) -> Result<(), Refusal> {
        match namespace_of(host, &self.domain) {
            Some(owner) if owner == namespace => return Ok(()),
            Some(_) => return Err(Refusal::OtherNamespace),
            None => {}
        }
        let granted = self
            .host_grants
            .iter()
            .filter(|grant| grant.namespace == namespace)
            .flat_map(|grant| &grant.hosts)
            .any(|pattern| covers(pattern, host));
        if granted {
            Ok(())
        } else {
            Err(Refusal::NotGranted)
        }
    }
}

/// The namespace whose part of `domain` `host` lies in: the label just before the domain
/// (`web.shop.DOMAIN`, `*.shop.DOMAIN`, `shop.DOMAIN` → `shop`). `None` for hosts outside the
/// domain, the domain itself, and `*.DOMAIN`, which covers every namespace.
pub(crate) fn namespace_of<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    let under = host.strip_suffix(domain)?.strip_suffix('.')?;
    let label = under.rsplit('.').next()?;
    (label != "*" && !label.is_empty()).then_some(label)
}

/// Whether grant `pattern` covers `host`: equal, or the pattern `*.S` and the host under `S` (a
/// wildcard host `*.T` is covered when `T` is `S` or under it).
fn covers(pattern: &str, host: &str) -> bool {
    let pattern = normalise_host_name(pattern);
    if pattern == host {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    host.strip_prefix("*.")
        .unwrap_or(host)
        .strip_suffix(suffix)
        .is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            domain: "127.0.0.1.nip.io".into(),
            host_grants: vec![HostGrant {
                namespace: "shop".into(),
                hosts: vec!["*.shop.example.com".into(), "shop.example.com".into()],
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn a_namespace_owns_its_part_of_the_domain_and_no_other() {
        let p = policy();
        assert_eq!(p.allows("a", "web.a.127.0.0.1.nip.io"), Ok(()));
        assert_eq!(p.allows("a", "*.a.127.0.0.1.nip.io"), Ok(()));
        assert_eq!(p.allows("a", "x.y.a.127.0.0.1.nip.io"), Ok(()));
        assert_eq!(
            p.allows("a", "web.b.127.0.0.1.nip.io"),
            Err(Refusal::OtherNamespace)
        );
        assert_eq!(
            p.allows("a", "*.127.0.0.1.nip.io"),
            Err(Refusal::NotGranted)
        );
        assert_eq!(p.allows("a", "elsewhere.test"), Err(Refusal::NotGranted));
    }

    #[test]
    fn grants_give_hosts_and_wildcards_under_their_patterns() {
        let p = policy();
        assert_eq!(p.allows("shop", "shop.example.com"), Ok(()));
        assert_eq!(p.allows("shop", "api.shop.example.com"), Ok(()));
        assert_eq!(p.allows("shop", "*.shop.example.com"), Ok(()));
        assert_eq!(p.allows("shop", "*.eu.shop.example.com"), Ok(()));
        assert_eq!(p.allows("shop", "*.example.com"), Err(Refusal::NotGranted));
        assert_eq!(
            p.allows("shop", "evilshop.example.com"),
            Err(Refusal::NotGranted)
        );
        assert_eq!(
            p.allows("other", "shop.example.com"),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn a_grant_never_reaches_into_another_namespaces_default_hosts() {
        let mut p = policy();
        p.host_grants.push(HostGrant {
            namespace: "a".into(),
            hosts: vec!["*.127.0.0.1.nip.io".into()],
        });
        assert_eq!(p.allows("a", "*.127.0.0.1.nip.io"), Ok(()));
        assert_eq!(
            p.allows("a", "web.b.127.0.0.1.nip.io"),
            Err(Refusal::OtherNamespace)
        );
    }

    #[test]
    fn settings_asked_above_a_ceiling_are_clamped_and_named() {
        let mut asked = RouteSettings {
            max_queued: Some(4_294_967_295),
            cold_start_timeout: Some(HumanDuration(Duration::from_secs(3600))),
            max_scale: Some(5),
            ..RouteSettings::default()
        };
        let clamped = Ceilings::default().clamp(&mut asked);
        assert_eq!(asked.max_queued, Some(10_000));
        assert_eq!(
            asked.cold_start_timeout,
            Some(HumanDuration(Duration::from_secs(600)))
        );
        assert_eq!(asked.max_scale, Some(5), "below its ceiling");
        let fields: Vec<_> = clamped.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["max_queued", "cold_start_timeout"]);
        assert_eq!(clamped[0].asked, "4294967295");
        assert_eq!(clamped[1].ceiling, "10m");
    }
}

//! Host normalisation and the route table.
//!
//! The table is an immutable index swapped whole ([`ArcSwap`]) when routes change; a lookup loads
//! the current index without a lock and without cloning it, and returns the route's `Arc`. Exact
//! hosts are matched first, then `*.suffix` wildcards, longest suffix first (a wildcard matches
//! any depth of subdomain, as in Envoy). Among routes on one host the longest path prefix wins;
//! a prefix matches whole path segments (`/api` matches `/api` and `/api/x`, not `/apix`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::metrics::{GaugeSource, RouteGaugeValues};
use crate::policy::namespace_of;
use crate::route::Route;
use arc_swap::ArcSwap;

/// Routes by host (and optional path prefix).
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    index: ArcSwap<Index>,
    /// The domain of default hosts: a wildcard never serves a host in another namespace's part
    /// of it (see [`crate::policy`]).
    domain: String,
}

#[derive(Debug, Default)]
struct Index {
    routes: Arc<Vec<Arc<Route>>>,
    exact: HostMap,
    wildcard: HostMap,
}

/// Routes by host name, hashed with [`HostHasher`].
type HostMap = HashMap<String, Vec<Arc<Route>>, BuildHasherDefault<HostHasher>>;

/// FNV-1a over the host's bytes. The table's keys are the configured hosts, never the clients',
/// so a keyed hash (std's SipHash, there against collision flooding by whoever picks the keys)
/// buys nothing here, and costs several times more per lookup on these short names.
#[derive(Debug, Clone, Copy)]
struct HostHasher(u64);

impl Default for HostHasher {
    fn default() -> HostHasher {
        HostHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for HostHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Index {
    fn build(routes: Vec<Arc<Route>>) -> Index {
        let mut exact = HostMap::default();
        let mut wildcard = HostMap::default();
        for route in &routes {
            for host in &route.spec().hosts {
                let (map, key) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix),
                    None => (&mut exact, host.as_str()),
                };
                map.entry(key.to_owned())
                    .or_default()
                    .push(Arc::clone(route));
            }
        }
        for entries in exact.values_mut().chain(wildcard.values_mut()) {
            entries.sort_by_key(|r| {
                std::cmp::Reverse(r.spec().path_prefix.as_ref().map_or(0, |p| p.len()))
            });
        }
        Index {
            routes: Arc::new(routes),
            exact,
            wildcard,
        }
    }
}

impl RouteTable {
    /// A table of `routes`, whose default hosts are under `domain`.
    pub(crate) fn new(routes: Vec<Arc<Route>>, domain: &str) -> RouteTable {
        RouteTable {
            index: ArcSwap::from_pointee(Index::build(routes)),
            domain: domain.to_owned(),
        }
    }

    /// Replaces every route at once; requests already routed keep their route.
    pub(crate) fn replace(&self, routes: Vec<Arc<Route>>) {
        self.index.store(Arc::new(Index::build(routes)));
    }

    /// All routes.
    pub(crate) fn routes(&self) -> Arc<Vec<Arc<Route>>> {
        Arc::clone(&self.index.load().routes)
    }

    /// The route for a normalised `host` and a request `path`.
    pub(crate) fn lookup(&self, host: &str, path: &str) -> Option<Arc<Route>> {
        let index = self.index.load();
        if let Some(found) = index
            .exact
            .get(host)
            .and_then(|entries| pick(entries, path))
        {
            return Some(found);
        }
        if index.wildcard.is_empty() {
            return None;
        }
        // A wildcard reaching into the domain of default hosts serves only its own namespace's
        // part of it.
        let owner = namespace_of(host, &self.domain);
        // Longest suffix first: "a.b.example.com" tries "b.example.com", "example.com", "com".
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(found) = index.wildcard.get(rest).and_then(|entries| {
                let allowed = entries
                    .iter()
                    .filter(|route| owner.is_none_or(|ns| route.spec().namespace == ns));
                pick(allowed, path)
            }) {
                return Some(found);
            }
        }
        None
    }
}

fn pick<'a>(entries: impl IntoIterator<Item = &'a Arc<Route>>, path: &str) -> Option<Arc<Route>> {
    entries
        .into_iter()
        .find(|route| match &route.spec().path_prefix {
            None => true,
            Some(prefix) => {
                path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
        })
        .cloned()
}

/// An authority (`host[:port]`, `[v6]:port`) split into its host and, if it has one, its port:
/// what follows the last `:`, or for a bracketed IPv6 literal the `:` right after its `]`.
/// Byte-wise: `str`'s pattern searches cost more than the whole scan of a short host (and both
/// bytes sought are ASCII, so each cut falls between characters).
pub(crate) fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority
            .bytes()
            .position(|b| b == b']')
            .map(|bracket| bracket + 1)
    } else {
        authority.bytes().rposition(|b| b == b':')
    };
    let Some(host_end) = host_end else {
        return (authority, None);
    };
    let (host, rest) = authority.split_at(host_end);
    (host, rest.strip_prefix(':'))
}

/// Lower-cases a Host header value and drops its port and trailing dot. Allocates only when the
/// host has upper-case letters. `None` for an empty host.
pub(crate) fn normalise_host(raw: &str) -> Option<Cow<'_, str>> {
    let (without_port, _) = split_port(raw);
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

impl GaugeSource for RouteTable {
    fn gauges(&self) -> Vec<RouteGaugeValues> {
        self.routes()
            .iter()
            .map(|route| {
                let stats = route.stats();
                RouteGaugeValues {
                    route: route.spec().name.clone(),
                    namespace: route.spec().namespace.clone(),
                    in_flight: stats.in_flight_now(),
                    queued: stats.queued_now(),
                    desired: route.activation().desired(),
                    ready: route.backends().ready_count() as u32,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::provider::{BoxFuture, Provider, ProviderError, Reporter, ScaleRequest, Scaled};
    use crate::spec::RouteSpec;
    use crate::stats::HoldBudget;

    struct NoProvider;
    impl Provider for NoProvider {
        fn attach(&self, _: &RouteSpec, _: Reporter) {}
        fn detach(&self, _: &str) {}
        fn scale<'a>(
            &'a self,
            _: ScaleRequest<'a>,
        ) -> BoxFuture<'a, Result<Scaled, ProviderError>> {
            Box::pin(async { Ok(Scaled::Applied) })
        }
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn table(toml: &str) -> RouteTable {
        let config = Config::from_toml(toml).expect("valid config");
        let metrics = Metrics::new();
        let provider: Arc<dyn Provider> = Arc::new(NoProvider);
        RouteTable::new(
            config
                .routes
                .into_iter()
                .map(|s| Route::new(s, &provider, &HoldBudget::new(u64::MAX), &metrics))
                .collect(),
            "127.0.0.1.nip.io",
        )
    }

    fn routed(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        let host = normalise_host(host)?;
        table.lookup(&host, path).map(|r| r.id().to_owned())
    }

    const ROUTES: &str = r#"
[[routes]]
name = "hello"
hosts = ["hello.localhost", "*.apps.test"]
[routes.process]
command = ["true"]
[[routes]]
name = "api"
namespace = "shop"
hosts = ["hello.localhost"]
path_prefix = "/api"
[routes.process]
command = ["true"]
[[routes]]
name = "deep"
hosts = ["*.x.apps.test"]
[routes.process]
command = ["true"]
"#;

    #[test]
    fn the_default_host_is_name_namespace_domain() {
        let t = table(ROUTES);
        assert_eq!(
            routed(&t, "hello.default.127.0.0.1.nip.io", "/"),
            Some("default/hello".into())
        );
        assert_eq!(
            routed(&t, "api.shop.127.0.0.1.nip.io", "/api/x"),
            Some("shop/api".into())
        );
    }

    #[test]
    fn hosts_match_ignoring_case_port_and_trailing_dot() {
        let t = table(ROUTES);
        assert_eq!(
            routed(&t, "HELLO.localhost.:8080", "/"),
            Some("default/hello".into())
        );
        assert_eq!(routed(&t, "nobody.localhost", "/"), None);
    }

    #[test]
    fn the_longest_path_prefix_wins_on_whole_segments() {
        let t = table(ROUTES);
        assert_eq!(
            routed(&t, "hello.localhost", "/api"),
            Some("shop/api".into())
        );
        assert_eq!(
            routed(&t, "hello.localhost", "/api/v1"),
            Some("shop/api".into())
        );
        assert_eq!(
            routed(&t, "hello.localhost", "/apix"),
            Some("default/hello".into())
        );
    }

    #[test]
    fn wildcards_match_subdomains_longest_suffix_first() {
        let t = table(ROUTES);
        assert_eq!(routed(&t, "a.apps.test", "/"), Some("default/hello".into()));
        assert_eq!(
            routed(&t, "a.b.apps.test", "/"),
            Some("default/hello".into())
        );
        assert_eq!(
            routed(&t, "a.x.apps.test", "/"),
            Some("default/deep".into())
        );
        assert_eq!(routed(&t, "apps.test", "/"), None);
    }

    #[test]
    fn a_wildcard_over_the_domain_never_serves_another_namespaces_hosts() {
        let t = table(
            r#"
[[routes]]
name = "catchall"
namespace = "a"
hosts = ["*.127.0.0.1.nip.io"]
[routes.process]
command = ["true"]
"#,
        );
        assert_eq!(
            routed(&t, "anything.a.127.0.0.1.nip.io", "/"),
            Some("a/catchall".into())
        );
        assert_eq!(routed(&t, "web.b.127.0.0.1.nip.io", "/"), None);
    }

    #[test]
    fn an_authority_splits_at_its_last_colon_or_after_its_brackets() {
        for (authority, split) in [
            ("a.test:80", ("a.test", Some("80"))),
            ("a.test:", ("a.test", Some(""))),
            ("a.test", ("a.test", None)),
            ("a:b:80", ("a:b", Some("80"))),
            ("[::1]:8080", ("[::1]", Some("8080"))),
            ("[::1]", ("[::1]", None)),
            ("[::1]x", ("[::1]", None)),
            ("[::1", ("[::1", None)),
            ("é:1", ("é", Some("1"))),
        ] {
            assert_eq!(split_port(authority), split, "{authority}");
        }
    }

    #[test]
    fn ipv6_literals_keep_their_brackets() {
        assert_eq!(normalise_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalise_host("").as_deref(), None);
        assert_eq!(normalise_host(":80").as_deref(), None);
        for (raw, host) in [
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("[fe80::1]:443", "[fe80::1]"),
            ("A.Test.:80", "a.test"),
            ("a.test", "a.test"),
            ("a:b:80", "a:b"),
        ] {
            assert_eq!(normalise_host(raw).as_deref(), Some(host), "{raw}");
        }
    }
}

//! Micro-benchmarks of the per-request work the activator does besides moving bytes:
//!
//! - `route_lookup/{exact,wildcard,default_host,miss}/N`: host normalisation plus a route table
//!   lookup with N routes, each route answering its default host, one exact host and one
//!   `*.suffix` wildcard;
//! - `in_flight/{guard,lease,guard_and_lease}/{1,2}_threads`: taking and dropping the per-route
//!   in-flight guard and the endpoint lease,
//!   from one thread, and from two worker threads serving the same route (each counts into a
//!   shard of the route's counters; the endpoint's lease is one shared count);
//! - `headers/prepare_request/*`: rewriting a typical request's headers for a replica.
//!
//! Run with `cargo bench --bench micro`; see BENCHMARKS.md for results.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use activator::bench::{InFlight, Table, prepare_request};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request};

const DOMAIN: &str = "127.0.0.1.nip.io";

/// A table of `count` routes: `svcI` answers `svcI.default.DOMAIN`, `svcI.example.test` and
/// `*.svcI.apps.test`.
fn table_of(count: usize) -> Table {
    Table::new(
        (0..count)
            .map(|i| {
                vec![
                    format!("svc{i}.default.{DOMAIN}"),
                    format!("svc{i}.example.test"),
                    format!("*.svc{i}.apps.test"),
                ]
            })
            .collect(),
    )
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for count in [10, 1_000, 100_000] {
        let table = table_of(count);
        let target = count / 2;
        let hosts = [
            ("exact", format!("svc{target}.example.test:8080")),
            ("wildcard", format!("a.b.svc{target}.apps.test")),
            ("default_host", format!("svc{target}.default.{DOMAIN}")),
            ("miss", "nobody.example.test".to_owned()),
        ];
        for (kind, host) in &hosts {
            group.bench_with_input(BenchmarkId::new(*kind, count), host, |b, host| {
                b.iter(|| black_box(table.lookup(black_box(host), black_box("/index.html"))))
            });
        }
    }
    group.finish();
}

/// Runs `op` `iters` times on each of `threads` threads at once, each acting as a worker thread
/// of its own, and returns the time per operation as seen by one thread (the first), so
/// contention shows as a longer time.
fn contended(threads: usize, iters: u64, op: impl Fn() + Sync) -> Duration {
    let start = Barrier::new(threads);
    thread::scope(|scope| {
        let timed = |t: usize| {
            activator::bench::act_as_worker(t);
            start.wait();
            let begun = Instant::now();
            for _ in 0..iters {
                op();
            }
            begun.elapsed()
        };
        let others: Vec<_> = (1..threads)
            .map(|t| scope.spawn(move || timed(t)))
            .collect();
        let mine = timed(0);
        for other in others {
            other.join().expect("benchmark thread");
        }
        mine
    })
}

fn in_flight(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_flight");
    let route = InFlight::for_workers(2);
    for threads in [1, 2] {
        let id = format!("{threads}_threads");
        group.bench_function(BenchmarkId::new("guard", &id), |b| {
            b.iter_custom(|iters| contended(threads, iters, || route.guard()))
        });
        group.bench_function(BenchmarkId::new("lease", &id), |b| {
            b.iter_custom(|iters| contended(threads, iters, || route.lease()))
        });
        group.bench_function(BenchmarkId::new("guard_and_lease", &id), |b| {
            b.iter_custom(|iters| contended(threads, iters, || route.guard_and_lease()))
        });
    }
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let client_ip = HeaderValue::from_static("10.1.2.3");
    let browser = Request::get("/search?q=activator")
        .header("host", "helloworld.default.127.0.0.1.nip.io")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
        )
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br")
        .header("cookie", "session=0123456789abcdef; theme=dark")
        .header("connection", "keep-alive")
        .header("upgrade-insecure-requests", "1")
        .body(())
        .expect("a valid request")
        .into_parts()
        .0;
    let behind_ingress = Request::get("/api/v1/items")
        .header("host", "api.shop.127.0.0.1.nip.io")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .header("x-request-id", "5f2b6c1e-8d7a-4f1b-9c3e-2a6d8b9e0f41")
        .body(())
        .expect("a valid request")
        .into_parts()
        .0;
    for (name, parts) in [("browser", browser), ("behind_ingress", behind_ingress)] {
        group.bench_function(BenchmarkId::new("prepare_request", name), |b| {
            b.iter_batched_ref(
                || parts.clone(),
                |parts| prepare_request(parts, &client_ip),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, route_lookup, in_flight, headers);
criterion_main!(benches);

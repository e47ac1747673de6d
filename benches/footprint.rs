//! Footprint: resident memory of an idle activator process with 0, 1,000 and 10,000 routes (no
//! replica running, no request served), read from `/proc/PID/status` once it is ready.
//!
//! Results go to `bench-results/footprint.json` under the target directory, and a table to
//! stdout. Run with `cargo bench --bench footprint`.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{ActivatorProc, Scratch, echo_route, rss_kib, status_kib};
use serde_json::json;

fn main() {
    if harness::listing_only() {
        return;
    }
    let mut results = Vec::new();
    println!(
        "{:>8} {:>10} {:>10} {:>14}",
        "routes", "RSS KiB", "peak KiB", "KiB per route"
    );
    let mut empty_rss = None;
    for count in [0usize, 1_000, 10_000] {
        let scratch = Scratch::new("footprint");
        let routes: String = (0..count)
            .map(|i| echo_route(&format!("svc{i}"), &[&format!("svc{i}.example.test")], ""))
            .collect();
        let activator = ActivatorProc::start(&scratch, "", &routes, None);
        // Let start-up allocations settle and a scaler tick pass.
        std::thread::sleep(Duration::from_millis(1500));
        let rss = rss_kib(activator.pid());
        let peak = status_kib(activator.pid(), "VmHWM");
        activator.proc.stop(Duration::from_secs(10));
        let base = *empty_rss.get_or_insert(rss);
        let per_route = (count > 0).then(|| rss.saturating_sub(base) as f64 / count as f64);
        println!(
            "{count:>8} {rss:>10} {peak:>10} {:>14}",
            per_route.map_or("-".to_owned(), |k| format!("{k:.2}"))
        );
        results.push(json!({
            "routes": count, "rss_kib": rss, "peak_rss_kib": peak, "kib_per_route": per_route,
        }));
    }
    let path = harness::results_path("footprint");
    std::fs::write(&path, serde_json::to_string_pretty(&results).expect("JSON")).expect("results");
    println!("results written to {}", path.display());
}

//! The `activator` binary: parse flags and config, set up logging, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use activator::app::App;
use activator::config::{Cli, Command, Config};
use activator::{huge_pages, routes_table, telemetry, workers};
use clap::Parser;
use tokio::net::TcpListener;

/// A request allocates and frees a handful of small blocks on its worker thread; mimalloc's
/// thread-local free lists serve them for less CPU than glibc's arenas (BENCHMARKS.md, section 2).
/// Its v2 line, because Rust always allocates through the aligned entry point, and v3 sends a
/// small block whose size is not a power of two down its over-allocating fallback once the free
/// list of its size class has run dry (two blocks per proxied request, about 140 instructions
/// each against 25); v2 serves any alignment up to 16 bytes from the ordinary free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off before anything in the process has allocated: the dynamic
/// loader runs an executable's `.preinit_array` before every constructor, the allocator's
/// included. So the allocator's first arena gets no huge page either (2 MiB on a kernel set to
/// `always`), and the flag recorded for replicas is the one this process was started with, even
/// when the allocator would have set it itself (`MIMALLOC_ALLOW_THP=0`).
extern "C" fn huge_pages_off() {
    huge_pages::disable();
}

// SAFETY: `.preinit_array` holds pointers to functions without arguments, which the loader
// calls once, on the main thread, before constructors; `huge_pages_off` is one, and what it
// calls makes two system calls and stores an atomic, needing nothing initialised beyond libc.
#[used]
#[unsafe(link_section = ".preinit_array")]
static HUGE_PAGES_OFF: extern "C" fn() = huge_pages_off;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The control runtime: everything but the proxy's requests, which the workers serve.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("activator: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Routes { admin, json }) = &cli.command {
        return runtime.block_on(async {
            match routes_table::fetch(admin).await {
                Ok((_, text)) if *json => println!("{text}"),
                Ok((routes, _)) => print!("{}", routes_table::render(&routes)),
                Err(error) => {
                    eprintln!("activator routes: {error}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        });
    }
    // A proxy holds two sockets per request; the default soft limit of 1024 is far too low. Raised
    // before the config is read: the default connection limit is sized from it.
    let raised = rlimit::increase_nofile_limit(u64::MAX);
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("activator: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(cli.log_format);
    if let Err(error) = raised {
        tracing::warn!(%error, "could not raise the open-files limit");
    }
    runtime.block_on(async {
        let proxy = match workers::bind(config.listen, config.connections.workers) {
            Ok(listeners) => listeners,
            Err(error) => {
                eprintln!("activator: cannot listen on {}: {error}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let admin = match TcpListener::bind(config.admin_listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "activator: cannot listen on {}: {error}",
                    config.admin_listen
                );
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            listen = %proxy[0].local_addr().map_or(config.listen, |a| a),
            admin = %admin.local_addr().map_or(config.admin_listen, |a| a),
            workers = proxy.len(),
            routes = config.routes.len(),
            kube = config.kube.is_some(),
            domain = %config.domain,
            "activator started"
        );
        let app = if config.kube.is_some() {
            let client = match kube::Config::infer().await {
                Ok(kube_config) => activator::kube_client(kube_config),
                Err(error) => {
                    eprintln!("activator: --kube: no Kubernetes configuration (in-cluster or KUBECONFIG): {error}");
                    return ExitCode::FAILURE;
                }
            };
            match client {
                Ok(client) => App::kube(config, client),
                Err(error) => {
                    eprintln!("activator: --kube: cannot set up a Kubernetes client (in-cluster or KUBECONFIG): {error}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            App::new(config)
        };
        app.run_on_workers(proxy, admin, signal()).await;
        ExitCode::SUCCESS
    })
}

async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the activator");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

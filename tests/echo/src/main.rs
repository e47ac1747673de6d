//! `activator-echo`: reads its options, waits the startup delay (and jitter), listens, prints
//! `activator-echo listening on ADDR`, and serves until killed, SIGTERM (after the term delay),
//! or the end of its standard input (with `--exit-on-stdin-eof`). See the crate documentation
//! for what it answers. The clock of its start (see `startup`) is read before anything else,
//! the runtime included.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use activator_echo::startup::Clock;
use activator_echo::{Options, options::USAGE};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let clock = Clock::start();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(clock)),
        Err(error) => {
            eprintln!("activator-echo: cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(clock: Clock) -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("activator-echo: {error}; {USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(delay) = options.term_delay {
        exit_after_sigterm(delay);
    }
    if options.exit_on_stdin_eof {
        exit_when_stdin_closes();
    }
    tokio::time::sleep(options.startup_wait(random_fraction())).await;
    let address = options.address();
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("activator-echo: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let startup = clock.listening();
    let bound = listener.local_addr().unwrap_or(address);
    println!("activator-echo listening on {bound}");
    activator_echo::serve(listener, options.hostname, startup).await;
    ExitCode::SUCCESS
}

/// A number from 0 to 1 that differs from process to process (std's hasher keys are random).
fn random_fraction() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Keeps serving for `delay` after SIGTERM, like a server finishing its work before it exits.
fn exit_after_sigterm(delay: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::spawn(async move {
        term.recv().await;
        tokio::time::sleep(delay).await;
        std::process::exit(0);
    });
}

/// Exits once standard input reaches its end, so a process whose parent died goes too.
fn exit_when_stdin_closes() {
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while matches!(stdin.read(&mut buffer).await, Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

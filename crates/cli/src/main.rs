//! The `switchboard` binary. Parses the command line, installs the log subscriber and hands
//! over to one subcommand; exit codes are decided here.

mod bench;
mod connect;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// With `--features mimalloc`: mimalloc instead of the system allocator (see
/// docs/benchmarks.md for the measured difference).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With `--features jemalloc`: jemalloc instead of the system allocator (measured in
/// docs/benchmarks.md too). Not both.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Switchboard: a real-time messaging server (rooms, presence, ordered delivery over WebSockets).
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Connect to a WebSocket URL: send typed lines, print what arrives (like wscat).
    Connect(connect::ConnectArgs),
    /// Mint a signed (HS256) token for testing.
    Token(token::TokenArgs),
    /// Load generator: echo, fanout, idle, connect and jitter scenarios.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("switchboard: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Token(args) => token::run(args),
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("switchboard: {err:#}");
            ExitCode::FAILURE
        }
    }
}

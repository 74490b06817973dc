//! The `switchboard` binary. Parses the command line, installs the log subscriber and hands
//! over to one subcommand; exit codes are decided here.

mod bench;
mod config_cmd;
mod connect;
mod errors;
mod refusal;
mod serve;
mod startup;
mod token;
mod top;
mod webhook_args;

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

/// Switchboard: a real-time messaging server in one binary. Browsers and devices connect over
/// WebSocket, join rooms, see who is there and receive every message of a room in one order,
/// with recovery after reconnects; one node alone, or many over Redis.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    after_help = "Start with `switchboard serve` and open http://127.0.0.1:8080/. Docs: README.md, docs/.\n\n\
Exit codes: 0 success (connect: also a close 1000/1001 by the server); 1 error (the message says \
what failed and, where it can, how to fix it; connect: also any other close code); 2 invalid \
command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Connect to a WebSocket URL: send typed lines, print what arrives (like wscat).
    #[command(
        after_help = "Lines (and -x messages) starting with / are commands: /ping [TEXT] \
        sends a WebSocket ping, /close [CODE [REASON]] closes (default 1000), /binary HEX sends a \
        binary frame (e.g. /binary 00ff10); //TEXT sends the text /TEXT. Tokens in the URL \
        (?token=) and credential headers are shown as [redacted].\n\n\
        Exit codes: 0 when the connection ended normally (our close, --wait elapsed, the server \
        closed with 1000 or 1001); 1 when it could not be made (the refusal and a hint are \
        printed) or ended otherwise; 2 invalid command line."
    )]
    Connect(connect::ConnectArgs),
    /// Mint a signed (HS256) token for testing.
    Token(token::TokenArgs),
    /// Load generator: echo, fanout, idle, connect and jitter scenarios.
    Bench(bench::BenchArgs),
    /// Check a configuration file, or print the effective settings.
    Config(config_cmd::ConfigArgs),
    /// Live figures of a running server (every node of a cluster): connections, messages,
    /// latency, busiest rooms. Needs the server's admin key. q quits.
    Top(top::TopArgs),
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
            Command::Config(args) => config_cmd::run(args),
            Command::Top(args) => top::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("switchboard: {}", errors::describe(&err));
            ExitCode::FAILURE
        }
    }
}

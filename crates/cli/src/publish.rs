//! `switchboard publish ROOM DATA`: publishes one message through the server's HTTP API (for
//! scripts and cron jobs). Prints the answer (`{"seq":…,"epoch":…,"duplicate":…}`) on stdout;
//! an error answer is printed on stderr with exit code 1.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use serde_json::value::RawValue;

use crate::api_client::ApiTarget;

/// Arguments of `switchboard publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// The room.
    room: String,
    /// The message: JSON (`{"text":"hi"}`, `42`), or any other text, sent as a JSON string;
    /// `@FILE` reads it from a file (`@-`: standard input).
    data: String,
    /// The server's base URL.
    #[arg(
        long,
        env = "SWITCHBOARD_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// An API key with the `publish` scope.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    key: String,
    /// Idempotency key: a retry with the same one is not delivered twice.
    #[arg(long)]
    msg_id: Option<String>,
    /// The user the message is from [default: api].
    #[arg(long)]
    from: Option<String>,
    /// Send DATA's bytes as a binary message (`data_base64`).
    #[arg(long)]
    binary: bool,
}

fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading standard input")?;
            Ok(bytes)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let target = ApiTarget::new(&args.api, &args.key)?;
    let bytes = read_data(&args.data)?;
    let mut body = serde_json::Map::new();
    body.insert("room".into(), args.room.clone().into());
    if args.binary {
        body.insert(
            "data_base64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(&bytes)
                .into(),
        );
    } else {
        let text = String::from_utf8(bytes).context("DATA is not UTF-8 (use --binary)")?;
        let data = match serde_json::from_str::<Box<RawValue>>(&text) {
            Ok(json) => serde_json::from_str(json.get())?,
            Err(_) => serde_json::Value::String(text),
        };
        body.insert("data".into(), data);
    }
    if let Some(msg_id) = args.msg_id {
        body.insert("msg_id".into(), msg_id.into());
    }
    if let Some(from) = args.from {
        body.insert("from".into(), from.into());
    }
    let body = Bytes::from(serde_json::to_vec(&body)?);
    let mut connection = target.connect().await?;
    let (status, answer) = connection
        .call(Method::POST, "/api/v1/publish", Some(body), &[])
        .await?;
    let text = String::from_utf8_lossy(&answer);
    if status.is_success() {
        println!("{}", text.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.trim_end().to_owned());
    if status == http::StatusCode::NOT_FOUND && message.is_empty() {
        bail!("{status}: the server's HTTP API is off (set SWITCHBOARD_API_KEY on the server)");
    }
    bail!("{status}: {message}")
}

//! A minimal terminal chat on the Switchboard client SDK.
//!
//! Start a server (`cargo run -- serve`), then in two terminals:
//!
//! ```text
//! cargo run -p switchboard-client --example chat -- ws://127.0.0.1:8080/ws alice lobby
//! cargo run -p switchboard-client --example chat -- ws://127.0.0.1:8080/ws bob lobby
//! ```
//!
//! Each line typed is published to the room as `{"text": LINE}`; every event is printed.
//! End with Ctrl-D (or Ctrl-C). Stop and restart the server to watch the client reconnect,
//! re-join and re-sync.

use std::io::BufRead as _;

use serde_json::json;
use switchboard_client::{Client, Event, PresenceEvent};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(user), Some(room)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: chat WS_URL USER ROOM   (e.g. chat ws://127.0.0.1:8080/ws alice lobby)");
        std::process::exit(2);
    };

    let (client, mut events) = Client::builder(&url).user(&user).connect().await?;
    println!("connected to {url} as {user}");

    // Events are read in their own task, so that awaiting a request never blocks them.
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::Message {
                    room,
                    from,
                    data,
                    seq,
                    ..
                } => {
                    let text = data
                        .get("text")
                        .and_then(|t| t.as_str())
                        .map_or_else(|| data.to_string(), str::to_owned);
                    println!("[{room} #{seq}] {from}: {text}");
                }
                Event::Binary {
                    room,
                    from,
                    payload,
                    seq,
                    ..
                } => println!("[{room} #{seq}] {from} sent {} bytes", payload.len()),
                Event::Joined {
                    room,
                    members,
                    seq,
                    recovered,
                    ..
                } => println!(
                    "joined {room} at seq {seq} (recovered: {recovered:?}) with {members:?}"
                ),
                Event::Presence { room, event, user } => {
                    let what = match event {
                        PresenceEvent::Join => "joined",
                        PresenceEvent::Leave => "left",
                    };
                    println!("[{room}] {user} {what}");
                }
                Event::Typing { room, from } => println!("[{room}] {from} is typing…"),
                Event::Resync { room, seq, .. } => {
                    println!(
                        "[{room}] messages were missed; now at seq {seq} (fetch history to re-sync)"
                    );
                }
                Event::Closed => {
                    println!("closed");
                    break;
                }
                other => println!("{other:?}"),
            }
        }
    });

    client.join(room.as_str()).await?;
    let mut lines = stdin_lines()?;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match client.publish(room.as_str(), json!({ "text": line })).await {
                    Ok(_seq) => {}
                    Err(err) => eprintln!("publish failed: {err}"),
                },
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    printer.await?;
    Ok(())
}

/// Stdin lines, read on a plain thread (a blocking read cannot be cancelled).
fn stdin_lines() -> std::io::Result<mpsc::Receiver<String>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

//! Switchboard patch: `Config::auto_close_reply(false)` leaves the reply to a peer's close to
//! the application, which may first send what it still has queued.
#![cfg(all(feature = "client", feature = "server"))]
use futures_util::{SinkExt, StreamExt};
use tokio::io::duplex;
use tokio_websockets::{ClientBuilder, CloseCode, Config, Error, Message, ServerBuilder};

#[tokio::test]
async fn a_reply_queued_before_the_close_reply_still_reaches_the_peer() {
    let (tx, rx) = duplex(4096);
    let mut server = ServerBuilder::new()
        .config(Config::default().auto_close_reply(false))
        .serve(rx);
    let mut client = ClientBuilder::new().take_over(tx);

    client.send(Message::text("request")).await.unwrap();
    client
        .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), "bye"))
        .await
        .unwrap();

    assert_eq!(server.next().await.unwrap().unwrap().as_text(), Some("request"));
    assert!(server.next().await.unwrap().unwrap().is_close());
    // Nothing is read after the close, and nothing has been sent yet.
    assert!(server.next().await.is_none());
    server.send(Message::text("reply")).await.unwrap();
    server
        .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
        .await
        .unwrap();
    // The reply completed the close: nothing more may be sent.
    assert!(matches!(
        server.send(Message::text("late")).await,
        Err(Error::AlreadyClosed)
    ));

    assert_eq!(client.next().await.unwrap().unwrap().as_text(), Some("reply"));
    let close = client.next().await.unwrap().unwrap();
    assert_eq!(close.as_close().map(|(code, _)| code), Some(CloseCode::NORMAL_CLOSURE));
    assert!(client.next().await.is_none());
}

#[tokio::test]
async fn by_default_the_stream_answers_the_close_itself() {
    let (tx, rx) = duplex(4096);
    let mut server = ServerBuilder::new().serve(rx);
    let mut client = ClientBuilder::new().take_over(tx);

    client
        .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), "bye"))
        .await
        .unwrap();
    assert!(server.next().await.unwrap().unwrap().is_close());
    assert!(matches!(
        server.send(Message::text("late")).await,
        Err(Error::AlreadyClosed)
    ));
    assert!(server.next().await.is_none());
    let close = client.next().await.unwrap().unwrap();
    assert_eq!(close.as_close().map(|(code, _)| code), Some(CloseCode::NORMAL_CLOSURE));
}

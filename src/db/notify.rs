//! LISTEN on channels on a dedicated app-role connection, for the life of the process. Each
//! notification (channel, payload) goes to `on_message`; `on_connected` runs whenever the subscription is
//! (re-)established, because notifications sent while disconnected are lost and caches must
//! assume they missed some.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_postgres::AsyncMessage;

pub async fn listen(
    connector: super::Connector,
    channels: &'static [&'static str],
    on_connected: impl Fn() + Send + 'static,
    on_message: impl Fn(&str, &str) + Send + 'static,
) {
    loop {
        match connector.connect().await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                // Channels are fixed identifiers, never input.
                let sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
                let listening = client.batch_execute(&sql);
                tokio::pin!(listening);
                let mut subscribed = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !subscribed => {
                            if done.is_err() { break; }
                            subscribed = true;
                            on_connected();
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(n))) => on_message(n.channel(), n.payload()),
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                }
                tracing::warn!(?channels, "LISTEN connection lost; reconnecting");
            }
            Err(e) => tracing::warn!(?channels, error = %format!("{e:#}"), "cannot LISTEN; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

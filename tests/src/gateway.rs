//! [`FakeGateway`]: a Matrix push gateway on a free loopback port that
//! records every notification it is sent and answers as a test tells it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::eventually_within;

/// How the gateway answers.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayMode {
    /// 200 with `{"rejected": []}`.
    Accept,
    /// 200 with these pushkeys in `rejected`.
    Reject(Vec<String>),
    /// 500, so the homeserver retries.
    Fail,
    /// Records the request and never answers (until the sender gives up
    /// and closes the connection): a gateway that hangs.
    Hang,
}

#[derive(Default)]
struct State {
    received: Vec<Value>,
    mode: Option<GatewayMode>,
}

pub struct FakeGateway {
    port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGateway {
    pub async fn start(mode: GatewayMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            received: Vec::new(),
            mode: Some(mode),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    // Keep-alive: serve requests until the client closes.
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        let mut first = true;
                        loop {
                            line.clear();
                            match reader.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if line == "\r\n" && !first {
                                break;
                            }
                            first = false;
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let mode = {
                            let mut s = state.lock().unwrap();
                            s.received.push(value);
                            s.mode.clone().unwrap_or(GatewayMode::Accept)
                        };
                        let (status, reply) = match mode {
                            GatewayMode::Hang => {
                                let mut rest = Vec::new();
                                let _ = reader.read_to_end(&mut rest).await;
                                return;
                            }
                            GatewayMode::Accept => ("200 OK", json!({"rejected": []})),
                            GatewayMode::Reject(keys) => ("200 OK", json!({"rejected": keys})),
                            GatewayMode::Fail => ("500 Internal Server Error", json!({})),
                        };
                        let reply = reply.to_string();
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            reply.len()
                        );
                        if write.write_all(head.as_bytes()).await.is_err()
                            || write.write_all(reply.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        FakeGateway { port, state, task }
    }

    /// The `data.url` a pusher should use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/_matrix/push/v1/notify", self.port)
    }

    pub fn set_mode(&self, mode: GatewayMode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// Every `notification` received so far.
    pub fn received(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .map(|v| v["notification"].clone())
            .collect()
    }

    /// Waits until a notification for `event_id` arrives; panics after `within`.
    pub async fn wait_for(&self, event_id: &str, within: Duration) -> Value {
        let what = format!("a notification for {event_id}");
        eventually_within(within, &what, async || {
            let received = self.received();
            match received.iter().find(|n| n["event_id"] == event_id) {
                Some(n) => Ok(n.clone()),
                None => Err(received),
            }
        })
        .await
    }
}

//! A test double: a minimal HTTP/1.1 server that answers from a script and records what it
//! received, for testing providers against their real wire formats without a network. Only
//! built with the `test-support` feature.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A scripted response.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A JSON response.
pub fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

/// An OpenAI chat-completions answer carrying `content`.
pub fn completion(content: &str) -> Reply {
    reply(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1767225600, "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }),
    )
}

/// A request the mock received.
#[derive(Debug)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    /// Every header, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The body as text, for bodies that are not JSON (an OAuth token request's form).
    pub text: String,
}

/// The server: answers from its script (then with `completion({"ok": true})`).
#[derive(Debug, Default)]
pub struct Mock {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    /// The most requests it was handling at once.
    pub max_in_flight: AtomicUsize,
    /// How long each request is held before the answer.
    pub hold: Mutex<Duration>,
}

impl Mock {
    /// Listens on a free local port; returns the server and its base URL (`http://…/v1`).
    pub async fn start(script: Vec<Reply>) -> (Arc<Mock>, String) {
        let mock = Arc::new(Mock {
            script: Mutex::new(script.into()),
            ..Mock::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}/v1",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let server = Arc::clone(&mock);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mock = Arc::clone(&server);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, length);
                        }
                    };
                    while buffer.len() < head_end + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let authorization = headers
                        .iter()
                        .find(|(k, _)| k == "authorization")
                        .map(|(_, v)| v.clone());
                    let body = serde_json::from_slice(&buffer[head_end..]).unwrap_or(Value::Null);
                    let text = String::from_utf8_lossy(&buffer[head_end..]).into_owned();
                    let now = mock.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    mock.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    let hold = *mock.hold.lock().unwrap_or_else(|p| p.into_inner());
                    tokio::time::sleep(hold).await;
                    mock.seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Seen {
                            path,
                            authorization,
                            headers,
                            body,
                            text,
                        });
                    let next = mock
                        .script
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front()
                        .unwrap_or_else(|| completion(r#"{"ok": true}"#));
                    mock.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        next.status,
                        next.body.len()
                    );
                    for (k, v) in &next.headers {
                        response += &format!("{k}: {v}\r\n");
                    }
                    response += "\r\n";
                    response += &next.body;
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (mock, url)
    }

    /// The requests received since the last call.
    pub fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

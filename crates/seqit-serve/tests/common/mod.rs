//! What the server tests share: the default model loaded once per test binary, a real
//! server on an ephemeral loopback port, and an HTTP client.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::Client;
use seqit_engine::{Engine, EngineOptions};
use seqit_serve::ServerConfig;
use serde_json::{json, Value};

/// The name the tests serve the default model under.
pub const MODEL: &str = "smollm2-135m";

/// The default model with default options, loaded once per test binary.
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| load_engine(EngineOptions::default()))
        .clone()
}

/// The default model with `options` (a fresh load).
pub fn load_engine(options: EngineOptions) -> Arc<Engine> {
    // Every test skips first when the model is missing (`seqit_testkit::require_model`).
    let path = seqit_testkit::require_model().expect("the default model is installed");
    Arc::new(Engine::load(&path, options).expect("the default model loads"))
}

/// Starts a server over `engine` on an ephemeral loopback port, on its own thread and
/// runtime (each `#[tokio::test]` runtime ends with its test), and returns its address.
pub fn start_server_with(engine: Arc<Engine>, config: ServerConfig) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // A deep accept queue: tests connect faster than a busy server accepts (an
            // overflow costs the client a one-second SYN retry).
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let listener = socket.listen(4096).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            seqit_serve::serve(engine, config, listener).await.unwrap();
        });
    });
    rx.recv().expect("the test server started")
}

/// [`start_server_with`] over the shared default engine; returns the base URL.
pub fn start_server(config: ServerConfig) -> String {
    format!("http://{}", start_server_with(engine(), config))
}

/// A client for the calling test. Not shared: pooled connections belong to the runtime
/// of the test that opened them and break when that test ends.
pub fn client() -> Client {
    client_with_timeout(Duration::from_secs(300))
}

pub fn client_with_timeout(timeout: Duration) -> Client {
    Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A chat-completions body asking [`MODEL`] `content`, with the fields of `extra` added.
pub fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

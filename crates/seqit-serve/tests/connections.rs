//! Slow and idle clients on a real loopback server: idle connections cannot lock others
//! out (at the connection limit the oldest idle one gives way), a request head or body
//! that stops arriving is cut off after its timeout, and waiting for the engine never
//! counts as idle.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{client_with_timeout, engine, start_server_with, MODEL};
use reqwest::StatusCode;
use seqit_serve::ServerConfig;
use serde_json::{json, Value};

/// Whether the server has closed its end (end of stream or reset); never blocks.
fn closed_by_server(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    match stream.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Reads until the server closes the connection; how long that took.
fn time_until_closed(stream: &mut TcpStream, since: Instant) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(err) => assert!(
            err.kind() != std::io::ErrorKind::WouldBlock
                && err.kind() != std::io::ErrorKind::TimedOut,
            "the server never closed the connection"
        ),
    }
    since.elapsed()
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_stop_health() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    const IDLE: usize = 2000;
    const LIMIT: usize = 500;
    // 2000 client sockets, up to 500 server sockets, and the rest of the process.
    let files = seqit_serve::raise_open_files_limit().expect("the open-file limit");
    assert!(
        files >= 3000,
        "this test needs 3000 open files; the hard limit is {files}"
    );
    let mut config = ServerConfig::new(MODEL);
    config.max_connections = LIMIT;
    let addr = start_server_with(engine(), config);

    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let opened = started.elapsed();

    let started = Instant::now();
    let health = client_with_timeout(Duration::from_secs(60))
        .get(format!("http://{addr}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/health answers");
    assert_eq!(health.status(), StatusCode::OK);
    let answered = started.elapsed();

    // The server kept at most its limit: the oldest idle connections gave way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed = idle.iter().filter(|s| closed_by_server(s)).count();
    eprintln!(
        "{IDLE} idle connections opened in {opened:?}; /health answered in {answered:?}; \
         {closed} idle connections closed by the server (limit {LIMIT})"
    );
    assert!(closed >= IDLE - LIMIT, "only {closed} closed");
    assert!(answered < Duration::from_secs(2), "{answered:?}");
}

#[tokio::test]
async fn half_a_header_line_is_cut_off_after_the_header_timeout() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let mut config = ServerConfig::new(MODEL);
    config.header_timeout = Duration::from_secs(1);
    let addr = start_server_with(engine(), config);

    let started = Instant::now();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: loc")
        .unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    let (half, silent) = tokio::task::spawn_blocking(move || {
        (
            time_until_closed(&mut half, started),
            time_until_closed(&mut silent, started),
        )
    })
    .await
    .unwrap();
    eprintln!("half a header line closed after {half:?}; a silent connection after {silent:?}");
    for took in [half, silent] {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    // Whole requests are unaffected.
    let health = client_with_timeout(Duration::from_secs(60))
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_but_waiting_for_the_engine_is_not_idle() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let mut config = ServerConfig::new(MODEL);
    config.idle_timeout = Duration::from_secs(1);
    let addr = start_server_with(engine(), config);

    // A body that stops after a few bytes of the 1000 announced.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: loc\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"prompt\": ",
        )
        .unwrap();
    let took = tokio::task::spawn_blocking(move || time_until_closed(&mut stalled, started))
        .await
        .unwrap();
    eprintln!("a stalled body was cut off after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A request the engine takes longer than the idle timeout to answer is answered.
    let started = Instant::now();
    let response = client_with_timeout(Duration::from_secs(60))
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(
            &json!({"messages": [{"role": "user", "content": "Count to one hundred."}],
                      "temperature": 0, "max_tokens": 300, "ignore_eos": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let took = started.elapsed();
    eprintln!("a 300-token reply took {took:?} (idle timeout 1 s)");
    assert_eq!(answer["usage"]["completion_tokens"], 300);
    assert!(
        took > Duration::from_millis(1500),
        "the reply came too fast ({took:?}) to show anything"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = std::sync::mpsc::channel::<Instant>();
    let engine = engine();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let shutdown = async {
                let _ = stopped.await;
            };
            seqit_serve::serve_with_shutdown(engine, ServerConfig::new(MODEL), listener, shutdown)
                .await
                .unwrap();
            done.send(Instant::now()).unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    // A connection that sent nothing, and one kept alive after a request.
    let silent = TcpStream::connect(addr).unwrap();
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: loc\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    let asked = Instant::now();
    stop.send(()).unwrap();
    let returned =
        tokio::task::spawn_blocking(move || finished.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the server returns after its shutdown signal");
    let took = returned - asked;
    eprintln!("shutdown with two idle connections took {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(closed_by_server(&silent));
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

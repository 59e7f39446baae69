//! `https://` endpoints in the default build: a real TLS server on loopback (a
//! self-signed certificate made here, in front of the fault server's OpenAI protocol)
//! is trusted through `SSL_CERT_FILE`, and refused at once, with a hint, without it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use seqit_faultserver::{BackgroundFaultServer, FaultConfig, ScriptRule};
use seqit_testkit::cli::Seqit;
use tokio::net::{TcpListener, TcpStream};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

/// A TLS terminator: accepts TLS on its own port with `cert`, forwards the plain bytes
/// to `upstream`, and counts handshakes begun.
struct TlsProxy {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
}

impl TlsProxy {
    fn start(upstream: SocketAddr, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> Self {
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counter = handshakes.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                while let Ok((socket, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        let mut plain = TcpStream::connect(upstream).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        Self {
            addr: rx.recv().unwrap(),
            handshakes,
        }
    }
}

fn generate(url: &str, dir: &Path, cert_file: Option<&Path>) -> std::process::Output {
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"q\", \"prompt\": \"Say the password.\"}\n",
    )
    .unwrap();
    let mut command = SEQIT.command();
    command
        .args(["generate", "--endpoint", url, "--model", "m", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.join("out.jsonl"))
        .args(["--max-tokens", "8", "--no-cache"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(file) = cert_file {
        command.env("SSL_CERT_FILE", file);
    }
    command.output().unwrap()
}

#[test]
fn https_endpoint_with_a_self_signed_certificate() {
    let server = BackgroundFaultServer::start(FaultConfig {
        script: vec![ScriptRule {
            contains: "password".into(),
            reply: "swordfish".into(),
        }],
        ..FaultConfig::default()
    })
    .unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let proxy = TlsProxy::start(server.addr(), &cert);
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("test-ca.pem");
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    let url = format!("https://localhost:{}/v1", proxy.addr.port());

    // Trusted through SSL_CERT_FILE: the request goes through TLS to the server.
    let out = generate(&url, dir.path(), Some(&pem));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(written.contains("swordfish"), "{written}");
    assert_eq!(server.log().len(), 1);

    // Not trusted (the system's roots or the bundled ones): refused at the first
    // handshake with the reason and the fix, never retried.
    let before = proxy.handshakes.load(Ordering::SeqCst);
    let out = generate(&url, dir.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("TLS certificate of `https://localhost") && stderr.contains("not trusted"),
        "{stderr}"
    );
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert_eq!(
        proxy.handshakes.load(Ordering::SeqCst) - before,
        1,
        "{stderr}"
    );
    assert_eq!(server.log().len(), 1, "nothing reached the server");

    // A certificate for another name is refused even when its CA is trusted.
    let other = format!("https://127.0.0.1:{}/v1", proxy.addr.port());
    let out = generate(&other, dir.path(), Some(&pem));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not trusted"), "{stderr}");
}

//! The servers of served models (`[models.X] serve`): each started on its loopback port
//! before the first stage that queries it, kept while the following stages query it,
//! and stopped when a stage runs that does not (so that a teacher's GPUs are free when
//! training starts), when the run ends or fails, and when the runner dies (see
//! [`crate::supervise`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{expand, Experiment};
use crate::plan::path_str;
use crate::supervise::Supervised;

/// Seconds a server may take to answer `GET /v1/models` unless the model says.
const DEFAULT_SERVE_TIMEOUT: u64 = 900;

/// Gives every served model of `exp` a free loopback port.
pub fn assign_ports(exp: &Experiment) -> Result<Experiment> {
    let mut exp = exp.clone();
    for (name, model) in &exp.config.models {
        if model.serve.is_some() {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .context("cannot find a free loopback port for a served model")?;
            exp.ports
                .insert(name.clone(), listener.local_addr()?.port());
        }
    }
    Ok(exp)
}

/// The command line that serves model `name`.
pub fn serve_command(exp: &Experiment, name: &str, exe: &Path) -> String {
    let model = &exp.config.models[name];
    let checkpoint = match exp.run_serving(name) {
        Some(train) => path_str(&exp.checkpoint_dir(train)),
        None => model.checkpoint.clone().unwrap_or_default(),
    };
    expand(
        model.serve.as_deref().unwrap_or_default(),
        &[
            ("checkpoint", &checkpoint),
            ("port", &exp.ports[name].to_string()),
            ("name", &model.model),
            ("seqit", &path_str(exe)),
        ],
    )
}

/// The servers running now.
pub struct Servers<'a> {
    exp: &'a Experiment,
    exe: &'a Path,
    lock: &'a File,
    running: BTreeMap<String, Supervised>,
}

impl<'a> Servers<'a> {
    pub fn new(exp: &'a Experiment, exe: &'a Path, lock: &'a File) -> Self {
        Self {
            exp,
            exe,
            lock,
            running: BTreeMap::new(),
        }
    }

    /// Makes exactly the servers of `names` run: stops the others, starts the missing
    /// ones and waits until each answers.
    pub fn serve_only(&mut self, names: &[String], out: &mut dyn Write) -> Result<()> {
        let unneeded: Vec<String> = self
            .running
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in unneeded {
            writeln!(out, "      stopping the server of `{name}`")?;
            if let Some(mut server) = self.running.remove(&name) {
                server.stop();
            }
        }
        for name in names {
            if self.running.contains_key(name) {
                continue;
            }
            let command = serve_command(self.exp, name, self.exe);
            let log = server_log(self.exp, name);
            let port = self.exp.ports[name];
            writeln!(
                out,
                "      serving `{name}` on port {port}: {command} (log: {})",
                log.display()
            )?;
            out.flush()?;
            let mut server = Supervised::spawn(self.exe, &command, &log, self.lock)?;
            let timeout = self.exp.config.models[name]
                .serve_timeout
                .unwrap_or(DEFAULT_SERVE_TIMEOUT);
            wait_until_ready(&mut server, port, Duration::from_secs(timeout))
                .with_context(|| format!("the server of `{name}` (`{command}`)"))?;
            self.running.insert(name.clone(), server);
        }
        Ok(())
    }
}

/// Polls `GET /v1/models` on the port until it answers 200; fails with the server's
/// last log lines if it exits first or the timeout passes.
fn wait_until_ready(server: &mut Supervised, port: u16, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = server.try_wait()? {
            bail!(
                "it exited ({status}) before answering on port {port}; its last lines ({}):\n{}",
                server.log().display(),
                server.log_tail(20)
            );
        }
        if models_endpoint_answers(port) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "it did not answer `GET /v1/models` on port {port} within {} s; its last lines ({}):\n{}",
                timeout.as_secs(),
                server.log().display(),
                server.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether `GET /v1/models` on the loopback port returns 200.
fn models_endpoint_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    // "HTTP/1.1 200 OK"
    let line = String::from_utf8_lossy(&head[..read]);
    let mut words = line.split_whitespace();
    words.next().is_some_and(|v| v.starts_with("HTTP/1.")) && words.next() == Some("200")
}

/// The log file of a served model's server.
pub fn server_log(exp: &Experiment, name: &str) -> PathBuf {
    exp.run_dir.join("servers").join(format!("{name}.log"))
}

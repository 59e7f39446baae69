//! The parent's side of a run: read the pipes with caps, enforce the wall-clock limit by
//! killing the whole process group, reap the child and collect its resource usage.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Bytes kept of one output stream.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub data: Vec<u8>,
    pub total: usize,
    pub eof: bool,
}

impl Capture {
    fn push(&mut self, chunk: &[u8], cap: usize) {
        self.total += chunk.len();
        let room = cap.saturating_sub(self.data.len());
        self.data.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// How the process ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Raw wait status.
    pub status: libc::c_int,
    /// User + system CPU seconds of the process and its reaped descendants.
    pub cpu_seconds: f64,
    /// Whether the parent killed it at the wall-clock limit.
    pub killed_at_deadline: bool,
    pub stdout: Capture,
    pub stderr: Capture,
    pub verdict: Capture,
}

pub(crate) struct Pipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub verdict: OwnedFd,
}

/// Watches process `pid` (a session leader) until it exits or `deadline` passes.
pub(crate) fn watch(
    pid: libc::pid_t,
    pipes: Pipes,
    deadline: Instant,
    cap: usize,
) -> io::Result<Finished> {
    let fds = [
        pipes.stdout.as_raw_fd(),
        pipes.stderr.as_raw_fd(),
        pipes.verdict.as_raw_fd(),
    ];
    for fd in fds {
        set_nonblocking(fd)?;
    }
    let caps = [cap, cap, 4096];
    let mut captures = [Capture::default(), Capture::default(), Capture::default()];
    // SAFETY: `pidfd_open` takes two integers and touches no memory of ours; `pid` is our
    // unreaped child, so it cannot name another process. The descriptor it returns is
    // ours to close (`close_pidfd`).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    let mut exited = false;
    let mut killed_at_deadline = false;
    while !exited {
        let now = Instant::now();
        if now >= deadline {
            kill_group(pid);
            killed_at_deadline = true;
            break;
        }
        let remaining = deadline - now;
        let tick = if pidfd >= 0 {
            remaining
        } else {
            remaining.min(Duration::from_millis(5))
        };
        let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let mut which: Vec<usize> = Vec::with_capacity(3);
        for (i, fd) in fds.iter().enumerate() {
            if !captures[i].eof {
                pollfds.push(libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        if pidfd >= 0 {
            pollfds.push(libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms = tick.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: `pollfds` is a live, writable array of exactly `pollfds.len()`
        // initialized `pollfd`s, which `poll` reads and whose `revents` it writes.
        let r = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            kill_group(pid);
            close_pidfd(pidfd);
            return Err(err);
        }
        for (slot, &i) in which.iter().enumerate() {
            if pollfds[slot].revents != 0 {
                drain(fds[i], &mut captures[i], caps[i]);
            }
        }
        exited = if pidfd >= 0 {
            pollfds.last().is_some_and(|p| p.revents != 0)
        } else {
            has_exited(pid)
        };
    }
    close_pidfd(pidfd);
    // Whatever the program left behind in its process group goes too.
    kill_group(pid);
    let (status, cpu_seconds) = reap(pid)?;
    // Writers are gone (or killed): read what is left, for a bounded time.
    let until = Instant::now() + Duration::from_millis(200);
    for (i, fd) in fds.iter().enumerate() {
        while !captures[i].eof && Instant::now() < until {
            if !drain(*fd, &mut captures[i], caps[i]) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let [stdout, stderr, verdict] = captures;
    Ok(Finished {
        status,
        cpu_seconds,
        killed_at_deadline,
        stdout,
        stderr,
        verdict,
    })
}

/// Reads what is available; returns whether anything (data or end-of-file) was seen.
fn drain(fd: RawFd, capture: &mut Capture, cap: usize) -> bool {
    let mut buf = [0u8; 16384];
    let mut progressed = false;
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes; `read` writes at
        // most that many into it.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            capture.push(&buf[..n as usize], cap);
            progressed = true;
            continue;
        }
        if n == 0 {
            capture.eof = true;
            return true;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return progressed,
            _ => {
                capture.eof = true;
                return true;
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: `F_GETFL`/`F_SETFL` take and return integers only and touch no memory of
    // ours; `fd` is a pipe end the caller owns (at worst they fail with `EBADF`).
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn close_pidfd(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: `fd` is the pidfd `watch` opened and owns alone; it is closed exactly
        // once, here, and not used afterwards.
        unsafe { libc::close(fd) };
    }
}

/// SIGKILL to the process group led by `pid` (and to `pid` itself).
pub(crate) fn kill_group(pid: libc::pid_t) {
    // SAFETY: `kill` takes integers only and touches no memory of ours. `pid` is our
    // unreaped child, so neither it nor its group id can have been reused by another
    // process; ESRCH (already gone) is fine.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

fn has_exited(pid: libc::pid_t) -> bool {
    // SAFETY: `siginfo_t` is a plain C struct (integers and unions of them): all zeroes
    // is a valid value, and `waitid` with `WNOHANG` expects it zeroed.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a live, writable `siginfo_t` that `waitid` fills in; `WNOWAIT`
    // leaves the child reapable by `reap`.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return false;
    }
    // SAFETY: `waitid` succeeded with `WEXITED`, so `info` is either still zeroed (no
    // child has exited yet) or a child-state `siginfo_t`, whose `si_pid` is the field
    // this reads.
    unsafe { info.si_pid() != 0 }
}

fn reap(pid: libc::pid_t) -> io::Result<(libc::c_int, f64)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers: all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are live, writable locals of the types `wait4`
        // fills in; `pid` is our child, reaped only here.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((status, seconds(usage.ru_utime) + seconds(usage.ru_stime)))
}

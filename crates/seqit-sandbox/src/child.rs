//! The code that runs in the forked child before `exec`.
//!
//! Everything here runs between `fork` and `exec` of a multi-threaded program, so it
//! may only make system calls: no allocation, no locks, no panics. All paths and
//! buffers are prepared by the parent in a [`Plan`].
//!
//! With namespaces, the child (`A`, still in the host's namespaces) `clone`s the process
//! that will run Python (`C`) into new user, PID, mount, network, IPC and UTS
//! namespaces. `A` writes `C`'s uid and gid maps — from outside, which is what lets a
//! root `A` map the unprivileged uid — then waits for `C` and exits the way it did. `C`
//! is PID 1 of its namespace: when it dies, everything it started dies with it. It
//! assembles the read-only root (with the capabilities the new user namespace gives,
//! which reach nothing outside it), takes the unprivileged identity, drops every
//! capability it may not keep, and `exec`s.

use std::ffi::{c_int, c_ulong, CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::ptr;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) type Resource = c_int;

/// What the child does before `exec`, prepared in the parent.
pub(crate) struct Plan {
    /// Kernel isolation (namespaces and a minimal read-only root), if used.
    pub namespaces: Option<NamespacePlan>,
    /// Write end of the verdict pipe; becomes descriptor 3 in the child.
    pub verdict_fd: Option<RawFd>,
    /// Hard and soft limits set just before `exec`.
    pub rlimits: Vec<(Resource, u64)>,
    /// Basic isolation: `(uid, gid)` to switch to (only when running as root).
    pub drop_to: Option<(u32, u32)>,
}

pub(crate) struct NamespacePlan {
    /// `/proc/<pid>/uid_map` line for the new user namespace (written from outside).
    pub uid_map: CString,
    /// `/proc/<pid>/gid_map` line.
    pub gid_map: CString,
    /// The ids the process takes inside once the root is assembled (mapped by the lines
    /// above; as root, uid 0 is mapped too, for assembling the root).
    pub inside: (u32, u32),
    /// Where the new root is assembled (an empty directory shared by all runs).
    pub root: CString,
    /// Steps that populate the new root, in order.
    pub ops: Vec<MountOp>,
    /// The writable working directory as mounted inside (`<root>/tmp`), when this run
    /// has one (a fork server has none: each of its programs mounts its own).
    pub work_inside: Option<CString>,
    /// The working directory as seen after `pivot_root` (`/tmp`).
    pub cwd: CString,
    /// Mount flags to keep on remounts when `mount_setattr` is missing (per bind).
    pub fallback_readonly: Vec<(CString, c_ulong)>,
    /// Capabilities (bit mask, in the new user namespace only) kept across `exec` as
    /// ambient capabilities: what the fork server needs to give each program a fresh
    /// tmpfs and IPC namespace. Zero for a program.
    pub keep_caps: u64,
}

pub(crate) enum MountOp {
    Mkdir(CString),
    /// Create an empty file to bind a device node onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    /// Recursive bind mount.
    Bind {
        source: CString,
        target: CString,
    },
    /// A fresh procfs for the new PID namespace (failure is tolerated).
    Proc(CString),
    /// A fresh, size-limited tmpfs (the writable directory).
    Tmpfs {
        target: CString,
        options: CString,
    },
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const SECBIT_NOROOT: c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: c_ulong = 1 << 1;
/// `PR_CAP_AMBIENT` and its operations.
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_RAISE: c_ulong = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;
const PR_CAPBSET_DROP: c_int = 24;
const PR_SET_SECUREBITS: c_int = 28;
const PR_SET_KEEPCAPS: c_int = 8;

/// `CAP_SETPCAP` and `CAP_SYS_ADMIN`, the fork server's two.
pub(crate) const SERVER_CAPS: u64 = (1 << 8) | (1 << 21);

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(result: c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_long(result: libc::c_long) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The `pre_exec` hook.
///
/// # Safety
/// Must only be called in the child between `fork` and `exec` (as `pre_exec`'s closure),
/// with `plan` built by the parent before the fork: it changes the calling process for
/// good (session, namespaces, root, identity, capabilities, limits, descriptor flags),
/// which only a process about to `exec` may have done to it. It allocates nothing,
/// takes no lock and cannot panic, so it is sound in the child of a multi-threaded
/// parent.
pub(crate) unsafe fn prepare(plan: &Plan) -> io::Result<()> {
    // A new session: the process group that the parent kills on timeout.
    check(libc::setsid())?;
    // Die with the thread that spawned us (the evaluation being killed, say).
    check(libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as c_ulong,
        0,
        0,
        0,
    ))?;
    if let Some(ns) = &plan.namespaces {
        // Returns only in the namespaced process, with its identity and capabilities
        // already what they will be.
        enter_namespaces(ns)?;
    }
    // Descriptors inherited by accident close at exec; the verdict pipe becomes fd 3.
    mark_cloexec_from(3);
    match plan.verdict_fd {
        Some(3) => check(libc::fcntl(3, libc::F_SETFD, 0))?,
        Some(fd) => check(libc::dup2(fd, 3))?,
        None => {}
    }
    for &(resource, value) in &plan.rlimits {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        check(libc::setrlimit(resource, &limit))?;
    }
    if plan.namespaces.is_none() {
        lock_capabilities(0);
        if let Some((uid, gid)) = plan.drop_to {
            check(libc::setgroups(0, ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
        }
        set_capabilities(0)?;
    }
    check(libc::prctl(
        libc::PR_SET_NO_NEW_PRIVS,
        1 as c_ulong,
        0,
        0,
        0,
    ))?;
    Ok(())
}

/// Clones the process that will run Python into new namespaces (see the module
/// documentation). Returns in that process, with its root, identity and capabilities
/// what they will be at `exec`; the intermediate process never returns ([`relay`]).
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): it forks and changes namespaces, mounts and
/// credentials, allocating nothing. The caller must `exec` (or exit) once it returns.
unsafe fn enter_namespaces(ns: &NamespacePlan) -> io::Result<()> {
    if libc::geteuid() == 0 {
        // No supplementary groups (root's would follow the process in).
        check(libc::setgroups(0, ptr::null()))?;
    }
    let mut sync = [0 as c_int; 2];
    check(libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC))?;
    let [sync_read, sync_write] = sync;
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // A raw clone behaves like fork here (no new stack): the child continues below.
    let pid = libc::syscall(
        libc::SYS_clone,
        (flags | libc::SIGCHLD) as c_ulong,
        0 as c_ulong,
        0 as c_ulong,
        0 as c_ulong,
        0 as c_ulong,
    ) as libc::pid_t;
    if pid < 0 {
        let err = io::Error::last_os_error();
        libc::close(sync_read);
        libc::close(sync_write);
        return Err(err);
    }
    if pid == 0 {
        libc::close(sync_write);
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as c_ulong,
            0,
            0,
            0,
        ))?;
        // Wait until the maps are written.
        let mut byte = 0u8;
        let n = loop {
            let n = libc::read(sync_read, (&mut byte as *mut u8).cast(), 1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break n;
        };
        libc::close(sync_read);
        if n != 1 {
            return Err(io::Error::other("the user namespace was not set up"));
        }
        build_root(ns)?;
        return take_identity(ns.inside, ns.keep_caps);
    }
    libc::close(sync_read);
    if let Err(err) = write_maps(pid, ns) {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::close(sync_write);
        return Err(err);
    }
    libc::write(sync_write, b"1".as_ptr().cast(), 1);
    libc::close(sync_write);
    relay(pid)
}

/// Writes the new user namespace's `setgroups`, `uid_map` and `gid_map` of `pid`.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): `pid` must be the caller's own child, just
/// cloned into a new user namespace and still waiting for its maps. Allocates nothing.
unsafe fn write_maps(pid: libc::pid_t, ns: &NamespacePlan) -> io::Result<()> {
    let mut path = [0u8; 64];
    write_file(proc_path(&mut path, pid, b"setgroups"), b"deny")?;
    write_file(proc_path(&mut path, pid, b"uid_map"), ns.uid_map.as_bytes())?;
    write_file(proc_path(&mut path, pid, b"gid_map"), ns.gid_map.as_bytes())
}

/// `/proc/<pid>/<name>` in `buffer`, NUL-terminated (no allocation).
fn proc_path<'b>(buffer: &'b mut [u8; 64], pid: libc::pid_t, name: &[u8]) -> &'b CStr {
    let mut digits = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 0;
    for &b in b"/proc/" {
        buffer[at] = b;
        at += 1;
    }
    for i in (0..len).rev() {
        buffer[at] = digits[i];
        at += 1;
    }
    buffer[at] = b'/';
    at += 1;
    for &b in name.iter().take(buffer.len() - at - 1) {
        buffer[at] = b;
        at += 1;
    }
    buffer[at] = 0;
    CStr::from_bytes_with_nul(&buffer[..=at]).unwrap_or(c"/nonexistent")
}

/// Switches to the ids programs run as, with only the capabilities in `keep` (a bit
/// mask; ambient, so that they survive `exec`).
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): it changes the process's credentials for
/// good, which only a process about to `exec` the sandboxed program may have done to it.
/// Allocates nothing.
unsafe fn take_identity((uid, gid): (u32, u32), keep: u64) -> io::Result<()> {
    lock_capabilities(keep);
    if keep != 0 {
        check(libc::prctl(PR_SET_KEEPCAPS, 1 as c_ulong, 0, 0, 0))?;
    }
    check(libc::setresgid(gid, gid, gid))?;
    check(libc::setresuid(uid, uid, uid))?;
    set_capabilities(keep)
}

/// No capability outside `keep` (a bit mask) can be gained again: root's exec-time
/// capabilities off, the bounding set reduced to `keep`. Needs `CAP_SETPCAP`; without it
/// (an unprivileged user) there is nothing to lock, and the steps are skipped.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): it drops capabilities and locks securebits
/// for good, for the process and everything it `exec`s. Allocates nothing.
unsafe fn lock_capabilities(keep: u64) {
    libc::prctl(
        PR_SET_SECUREBITS,
        SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
        0,
        0,
        0,
    );
    for cap in 0..64u64 {
        if keep & (1 << cap) == 0 {
            // EINVAL past the last capability, EPERM without CAP_SETPCAP.
            libc::prctl(PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0);
        }
    }
}

/// Leaves only the capabilities in `keep`, as ambient capabilities so that they survive
/// `exec`; with `keep` zero the process has none.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): it replaces the process's capability sets,
/// which only a process about to `exec` the sandboxed program may have done to it.
/// Allocates nothing.
unsafe fn set_capabilities(keep: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: keep as u32,
        },
        CapData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: (keep >> 32) as u32,
        },
    ];
    check_long(libc::syscall(
        libc::SYS_capset,
        &mut header as *mut CapHeader,
        data.as_ptr(),
    ))?;
    check(libc::prctl(
        PR_CAP_AMBIENT,
        PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    ))?;
    for cap in 0..64u64 {
        if keep & (1 << cap) != 0 {
            check(libc::prctl(
                PR_CAP_AMBIENT,
                PR_CAP_AMBIENT_RAISE,
                cap as c_ulong,
                0,
                0,
            ))?;
        }
    }
    Ok(())
}

/// The intermediate process: closes every descriptor (so the parent sees end-of-file
/// and `std`'s exec-status pipe closes), waits for the namespace's PID 1 and exits the
/// same way it did.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): the caller must be the intermediate process
/// of [`enter_namespaces`] and `child` the process it cloned. It closes every descriptor
/// of the process, including ones that Rust objects copied across the fork think they
/// own: sound only because it never returns (it ends in `_exit`), so none is used again.
unsafe fn relay(child: libc::pid_t) -> ! {
    if libc::syscall(
        libc::SYS_close_range,
        0 as libc::c_uint,
        libc::c_uint::MAX,
        0 as c_int,
    ) < 0
    {
        for fd in 0..1024 {
            libc::close(fd);
        }
    }
    let mut status: c_int = 0;
    loop {
        let r = libc::waitpid(child, &mut status, 0);
        if r == child {
            break;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(125);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    libc::signal(signal, libc::SIG_DFL);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigaddset(&mut set, signal);
    libc::sigprocmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
    libc::kill(libc::getpid(), signal);
    libc::_exit(128 + signal);
}

/// Assembles the minimal read-only root from `ns.ops` and `pivot_root`s into it.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): the caller must be the process cloned into
/// new user and mount namespaces by [`enter_namespaces`], after its maps were written:
/// its mounts then reach nothing outside that mount namespace. Allocates nothing.
unsafe fn build_root(ns: &NamespacePlan) -> io::Result<()> {
    let none = ptr::null::<libc::c_char>();
    // Nothing we mount propagates back to the host.
    check(libc::mount(
        none,
        c"/".as_ptr(),
        none,
        libc::MS_REC | libc::MS_PRIVATE,
        ptr::null(),
    ))?;
    check(libc::mount(
        c"tmpfs".as_ptr(),
        ns.root.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        c"mode=0755,size=1m".as_ptr().cast(),
    ))?;
    for op in &ns.ops {
        match op {
            MountOp::Mkdir(path) => {
                let r = libc::mkdir(path.as_ptr(), 0o755);
                if r < 0 && *libc::__errno_location() != libc::EEXIST {
                    return Err(io::Error::last_os_error());
                }
            }
            MountOp::Touch(path) => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
            }
            MountOp::Symlink { target, link } => {
                check(libc::symlink(target.as_ptr(), link.as_ptr()))?
            }
            MountOp::Bind { source, target } => check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                ptr::null(),
            ))?,
            MountOp::Proc(target) => {
                // Tolerated: some container runtimes forbid a new procfs. /proc then
                // stays an empty directory.
                libc::mount(
                    c"proc".as_ptr(),
                    target.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    ptr::null(),
                );
            }
            MountOp::Tmpfs { target, options } => check(libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            ))?,
        }
    }
    make_readonly(ns)?;
    check(libc::chdir(ns.root.as_ptr()))?;
    check_long(libc::syscall(
        libc::SYS_pivot_root,
        c".".as_ptr(),
        c".".as_ptr(),
    ))?;
    check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
    check(libc::chdir(ns.cwd.as_ptr()))?;
    // Best effort: a neutral host name in the new UTS namespace.
    libc::sethostname(c"sandbox".as_ptr(), 7);
    Ok(())
}

/// Everything under the new root read-only and nosuid, except the working directory.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): the caller must be [`build_root`], in the
/// new mount namespace, with the root assembled and not yet pivoted into. Allocates
/// nothing.
unsafe fn make_readonly(ns: &NamespacePlan) -> io::Result<()> {
    let set = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let r = libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        ns.root.as_ptr(),
        libc::AT_RECURSIVE as libc::c_uint,
        &set as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    );
    if r == 0 {
        let Some(work) = &ns.work_inside else {
            return Ok(());
        };
        let clear = MountAttr {
            attr_set: 0,
            attr_clr: MOUNT_ATTR_RDONLY,
            propagation: 0,
            userns_fd: 0,
        };
        return check_long(libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            work.as_ptr(),
            0 as libc::c_uint,
            &clear as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ));
    }
    if *libc::__errno_location() != libc::ENOSYS {
        return Err(io::Error::last_os_error());
    }
    // Kernels before 5.12: remount each bind (top level only) and the root itself,
    // keeping the flags a user namespace may not drop. The working directory's tmpfs
    // is not among them and stays writable.
    let none = ptr::null::<libc::c_char>();
    for (target, keep) in &ns.fallback_readonly {
        check(libc::mount(
            none,
            target.as_ptr(),
            none,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | keep,
            ptr::null(),
        ))?;
    }
    check(libc::mount(
        none,
        ns.root.as_ptr(),
        none,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        ptr::null(),
    ))
}

/// Writes `data` to the existing file `path` in one `write`.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): it is part of the code that runs there
/// and makes only system calls (no allocation, no lock), on buffers the caller keeps
/// alive for the call.
unsafe fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    let err = io::Error::last_os_error();
    libc::close(fd);
    if n < 0 || n as usize != data.len() {
        return Err(err);
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec.
///
/// # Safety
/// Only in the child between `fork` and `exec` (from [`prepare`]): descriptors other code owns close at
/// `exec`, which is only harmless in a process about to `exec`. Allocates nothing.
unsafe fn mark_cloexec_from(first: c_int) {
    let r = libc::syscall(
        libc::SYS_close_range,
        first as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC as c_int,
    );
    if r < 0 {
        for fd in first..1024 {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_are_built_without_allocation() {
        let mut buffer = [0u8; 64];
        assert_eq!(
            proc_path(&mut buffer, 1234567, b"uid_map"),
            c"/proc/1234567/uid_map"
        );
        assert_eq!(
            proc_path(&mut buffer, 0, b"setgroups"),
            c"/proc/0/setgroups"
        );
    }
}

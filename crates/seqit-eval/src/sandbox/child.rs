//! The code that runs in the forked child before `exec`.
//!
//! Everything here runs between `fork` and `exec` of a multi-threaded program, so it
//! may only make system calls: no allocation, no locks, no panics. All paths and
//! buffers are prepared by the parent in a [`Plan`].

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
    /// `(uid, gid)` to switch to (only when running as root).
    pub drop_to: Option<(u32, u32)>,
}

pub(crate) struct NamespacePlan {
    /// Identity uid/gid maps for a new user namespace (when not root).
    pub user_maps: Option<(CString, CString)>,
    /// Where the new root is assembled (a directory of the run's temporary dir).
    pub root: CString,
    /// Steps that populate the new root, in order.
    pub ops: Vec<MountOp>,
    /// The writable working directory as mounted inside (`<root>/tmp`).
    pub work_inside: CString,
    /// The working directory as seen after `pivot_root` (`/tmp`).
    pub cwd: CString,
    /// Mount flags to keep on remounts when `mount_setattr` is missing (per bind).
    pub fallback_readonly: Vec<(CString, c_ulong)>,
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
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
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
/// Must only be called in the child between `fork` and `exec`.
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
    if let Some((uid, gid)) = plan.drop_to {
        check(libc::setgroups(0, ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
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

unsafe fn enter_namespaces(ns: &NamespacePlan) -> io::Result<()> {
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if ns.user_maps.is_some() {
        flags |= libc::CLONE_NEWUSER;
    }
    check(libc::unshare(flags))?;
    if let Some((uid_map, gid_map)) = &ns.user_maps {
        write_file(c"/proc/self/setgroups", b"deny")?;
        write_file(c"/proc/self/uid_map", uid_map.as_bytes())?;
        write_file(c"/proc/self/gid_map", gid_map.as_bytes())?;
    }
    // The new PID namespace applies to children: fork once more. The child becomes PID 1
    // there (when it dies, the kernel kills everything else in the namespace); this
    // process stays outside, waits, and passes the exit status on.
    let pid = libc::fork();
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        relay(pid);
    }
    check(libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as c_ulong,
        0,
        0,
        0,
    ))?;
    build_root(ns)
}

/// The intermediate process: closes every descriptor (so the parent sees end-of-file
/// and `std`'s exec-status pipe closes), waits for the namespace's PID 1 and exits the
/// same way it did.
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
        let clear = MountAttr {
            attr_set: 0,
            attr_clr: MOUNT_ATTR_RDONLY,
            propagation: 0,
            userns_fd: 0,
        };
        return check_long(libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            ns.work_inside.as_ptr(),
            0 as libc::c_uint,
            &clear as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ));
    }
    if *libc::__errno_location() != libc::ENOSYS {
        return Err(io::Error::last_os_error());
    }
    // Kernels before 5.12: remount each bind (top level only) and the root itself,
    // keeping the flags a user namespace may not drop.
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

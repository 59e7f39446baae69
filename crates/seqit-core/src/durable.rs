//! Durable, atomic replacement of files and directories: the one implementation every
//! seqit crate uses for outputs, manifests, journals' compactions and checkpoints.
//!
//! The protocol is the same for a file and a directory: write everything under a
//! temporary name next to the destination, `fsync` what was written (every file, then
//! the directories holding them), `rename` it over the destination, then `fsync` the
//! parent directory so the rename itself survives a crash or power loss. A reader (or a
//! process resuming after `kill -9`) therefore sees either the complete old content or
//! the complete new content, never a mixture and never nothing:
//!
//! * [`atomic_write`] — a whole file from bytes; [`AtomicFile`] — a file written as a
//!   stream and moved into place by [`AtomicFile::commit`] (dropped uncommitted, its
//!   temporary file is removed); [`atomic_write_with`] — a file made by a writer that
//!   takes a path.
//! * [`replace_dir`] — a directory staged under a temporary name (a checkpoint, an
//!   exported model). When the destination already exists, Linux swaps the two names in
//!   one step (`renameat2(RENAME_EXCHANGE)`) before the old one is removed.
//! * [`fsync_dir`], [`fsync_parent`], [`sync_tree`] — the building blocks.
//!
//! Temporary names start with a dot and end in `.tmp` (`.out.jsonl.1234-0.tmp`), so
//! directory scans can tell them from content. Append-only files (journals,
//! `metrics.jsonl`) are not replaced at all: they are appended to and, on resume, cut
//! back to their last complete line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes the entries of `dir` (creations, renames, removals) durable. A no-op where
/// directories cannot be opened for syncing (not Unix).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// [`fsync_dir`] of the directory holding `path`.
pub fn fsync_parent(path: &Path) -> io::Result<()> {
    fsync_dir(parent_dir(path))
}

/// A fresh temporary name next to `path`: `.NAME.PID-N.tmp`.
pub fn temp_path_for(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Whether `name` is one of the temporary names this module makes.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// A file written under a temporary name in its destination's directory and moved over
/// the destination by [`AtomicFile::commit`] (synced, renamed, parent synced). Dropped
/// without a commit (an error, a panic), it removes its temporary file, so a failed run
/// never leaves a half-written file where good data was expected.
///
/// Writes go straight to the file; wrap it in a `BufWriter` for many small writes.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Starts writing `path`, creating its parent directories.
    pub fn create(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(parent_dir(path))?;
        loop {
            let tmp = temp_path_for(path);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    return Ok(Self {
                        path: path.to_path_buf(),
                        tmp,
                        file: Some(file),
                    })
                }
                // A name left by an earlier process with the same id.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the file lands on commit.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where it is written until then.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The open temporary file (e.g. to `try_clone` it for a writer that takes a `File`).
    pub fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("an uncommitted AtomicFile has a file")
    }

    /// Syncs the data, renames the file over its destination and syncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("committed once");
        file.sync_all()?;
        drop(file);
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        fsync_parent(&self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.as_mut().expect("not committed").write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably (see the module documentation).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Replaces `path` atomically and durably with the file `write` creates at the
/// temporary path it is given: for writers that take a path rather than a stream
/// (safetensors). On failure the temporary file is removed and `path` is untouched.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    std::fs::create_dir_all(parent_dir(path))?;
    let tmp = temp_path_for(path);
    let written = write(&tmp)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_parent(path)
}

/// Syncs every file and directory under `dir` (and `dir` itself), files before the
/// directories that hold them. Symbolic links are not followed.
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    fsync_dir(dir)
}

/// Moves the fully written directory `staged` to `dir` durably: everything in `staged`
/// is synced, then it is renamed to `dir` and the parent is synced. An existing `dir`
/// is replaced without a moment where neither exists: on Linux the two are exchanged
/// in one step and the old content (now under the staged name) is removed afterwards;
/// elsewhere the old one is first renamed aside (still complete) and removed once the
/// new one is in place. `staged` and `dir` must be in the same directory.
pub fn replace_dir(staged: &Path, dir: &Path) -> io::Result<()> {
    sync_tree(staged)?;
    match std::fs::rename(staged, dir) {
        Ok(()) => return fsync_parent(dir),
        // An existing non-empty directory (ENOTEMPTY, EEXIST) or anything in the way.
        Err(_) if dir.exists() => {}
        Err(e) => return Err(e),
    }
    if exchange(staged, dir)? {
        fsync_parent(dir)?;
        std::fs::remove_dir_all(staged)?;
        return fsync_parent(dir);
    }
    let aside = temp_path_for(dir);
    std::fs::rename(dir, &aside)?;
    std::fs::rename(staged, dir)?;
    fsync_parent(dir)?;
    std::fs::remove_dir_all(&aside)?;
    fsync_parent(dir)
}

/// Swaps two paths atomically; `Ok(false)` where the system or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("seqit-durable-{}-a", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/out.txt");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names(&dir.join("sub")), ["out.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_uncommitted_file_is_removed_and_the_old_content_kept() {
        let dir = std::env::temp_dir().join(format!("seqit-durable-{}-b", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("out.txt");
        atomic_write(&path, b"old").unwrap();
        {
            let mut file = AtomicFile::create(&path).unwrap();
            file.write_all(b"half").unwrap();
            assert!(is_temp_name(
                &file.temp_path().file_name().unwrap().to_string_lossy()
            ));
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(&dir), ["out.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_are_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("seqit-durable-{}-c", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let target = dir.join("checkpoint-1");
        for (round, text) in ["first", "second"].into_iter().enumerate() {
            let staged = dir.join(".checkpoint-1.tmp");
            std::fs::create_dir_all(staged.join("nested")).unwrap();
            std::fs::write(staged.join("nested/a"), text).unwrap();
            std::fs::write(staged.join(format!("only-{round}")), "").unwrap();
            replace_dir(&staged, &target).unwrap();
            assert_eq!(
                std::fs::read_to_string(target.join("nested/a")).unwrap(),
                text
            );
            assert!(target.join(format!("only-{round}")).exists());
        }
        assert!(!target.join("only-0").exists(), "old content is gone");
        assert_eq!(names(&dir), ["checkpoint-1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Files pathcost writes (reports, exports, a sweep's results): checked
//! before any measuring starts, and replaced atomically.
//!
//! A run can take minutes to hours, so a typo in `--output` or a read-only
//! directory must fail at once, not when the measurements are done. An
//! existing file is replaced (documented in the README): the new content is
//! written to a temporary file beside it and renamed over it, so a reader,
//! or a crash mid-write, never sees half a file.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

/// Whether `path` means stdout.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The directory a file path lives in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The temporary name `path`'s new content is written under before the
/// rename: hidden, in the same directory (rename is only atomic within one
/// file system), and unique to this process.
fn temporary_for(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    parent_of(path).join(format!(".{name}.pathcost-{}.tmp", std::process::id()))
}

/// Checks that `dir` can hold pathcost's files: it is created if missing,
/// must be a directory, and must accept a new file (proved by creating and
/// removing one, which also catches read-only file systems and, unlike
/// `access(2)`, does not say yes to root everywhere).
pub fn check_directory(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let probe = dir.join(format!(".pathcost-write-check-{}", std::process::id()));
    fs::File::create(&probe).with_context(|| format!("cannot write in directory {}", dir.display()))?;
    // A probe left behind is harmless; failing the run for it would not be.
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// What is at a path about to be written.
enum Target {
    /// Nothing yet, or a regular file: written atomically at this path
    /// (a symbolic link is followed, so the file it names is replaced).
    File(PathBuf),
    /// A device, pipe or socket (`/dev/null`, `/dev/stderr`, a FIFO):
    /// written in place; renaming over it would replace the node itself.
    Special,
    Directory,
}

fn target_of(path: &Path) -> Target {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Target::Directory,
        Ok(m) if !m.is_file() => Target::Special,
        Ok(_) => Target::File(fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())),
        Err(_) => Target::File(path.to_owned()),
    }
}

/// Checks, before any work, that `path` can be written later: stdout
/// always can; a file needs a writable directory and must not itself be a
/// directory.
pub fn check_file(path: &Path) -> Result<()> {
    if is_stdout(path) {
        return Ok(());
    }
    match target_of(path) {
        Target::Directory => bail!("output {} is a directory; name a file in it", path.display()),
        Target::Special => fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(drop)
            .with_context(|| format!("output {} cannot be written", path.display())),
        Target::File(file) => check_directory(parent_of(&file))
            .with_context(|| format!("output {} cannot be written", path.display())),
    }
}

/// Replaces `path` with `bytes` atomically (temporary file, then rename),
/// creating its directory; `-` writes to stdout, and a device or pipe is
/// written in place.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if is_stdout(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()?;
        return Ok(());
    }
    let path = match target_of(path) {
        Target::Directory => bail!("output {} is a directory; name a file in it", path.display()),
        Target::Special => return fs::write(path, bytes).with_context(|| format!("failed to write {}", path.display())),
        Target::File(file) => file,
    };
    let dir = parent_of(&path);
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let tmp = temporary_for(&path);
    let written = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // On disk before the rename makes it visible: a crash right after
        // leaves the old file or the new one, never an empty one.
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to write {}", path.display()));
    }
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("failed to write {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pathcost-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("report.json");
        fs::write(&path, "old").unwrap();
        write_file(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("report.json")], "only the output is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_or_a_file_as_parent_is_refused_up_front() {
        let dir = scratch("refuse");
        let err = check_file(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
        let file = dir.join("plain");
        fs::write(&file, "").unwrap();
        let err = check_file(&file.join("report.json")).unwrap_err();
        assert!(format!("{err:#}").contains("is not a directory"), "{err:#}");
        assert!(check_file(&dir.join("new/report.json")).is_ok(), "a missing directory is created");
        assert!(check_file(Path::new("-")).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_written_in_place_and_links_are_followed() {
        // Renaming over /dev/null would replace the device for everyone.
        check_file(Path::new("/dev/null")).unwrap();
        write_file(Path::new("/dev/null"), b"x").unwrap();
        assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        let dir = scratch("link");
        let real = dir.join("real.json");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, dir.join("link.json")).unwrap();
        write_file(&dir.join("link.json"), b"new").unwrap();
        assert!(fs::symlink_metadata(dir.join("link.json")).unwrap().file_type().is_symlink(), "the link stays");
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        fs::remove_dir_all(&dir).unwrap();
    }
}

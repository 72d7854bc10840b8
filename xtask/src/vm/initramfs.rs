//! The test VM's initramfs: a newc cpio archive written here in Rust.
//!
//! It holds busybox, the kernel modules to load, the netfilter/IPVS tools and
//! bpftrace (the independent instrument the accuracy tests compare against) with
//! their shared libraries, `/init` (init.sh beside this file), the job script and
//! the binaries under test. It is rebuilt on every run: that takes about a second
//! and means it can never be stale.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::kernel::{Kernel, ModulePlan};
use crate::cmd;

const INIT: &str = include_str!("init.sh");

/// busybox-static's binary: no libraries, so it runs before anything is set up.
const BUSYBOX: &str = "/bin/busybox";

/// Tools copied from the host, by name, and whether the VM is useless without them.
/// Symlinks (iptables-legacy → xtables-legacy-multi) are kept as symlinks to one
/// copy of the real binary, which picks its personality from argv[0].
const TOOLS: &[(&str, bool)] = &[
    ("ip", true),
    ("iptables-legacy", true),
    ("iptables-legacy-save", true),
    ("iptables-legacy-restore", true),
    ("iptables-nft", true),
    ("iptables-nft-save", true),
    ("iptables-nft-restore", true),
    ("ip6tables-legacy", false),
    ("ip6tables-legacy-save", false),
    ("ip6tables-legacy-restore", false),
    ("ip6tables-nft", false),
    ("ip6tables-nft-save", false),
    ("ip6tables-nft-restore", false),
    ("nft", true),
    ("ipvsadm", true),
    ("ipset", true),
    ("conntrack", true),
    // The accuracy tests' second instrument. Its LLVM, clang and z3 libraries make
    // up about 200 MB of the image (qemu.rs gives the VM the memory for them);
    // copying them keeps the guest self-contained, where sharing the host's root
    // over 9p would make every library page a 9p read under TCG and let the guest
    // see the whole host file system.
    ("bpftrace", true),
    // util-linux's, not busybox's applet: tests/tests/capabilities.rs limits
    // the bounding set with `--bounding-set`, which busybox lacks.
    ("setpriv", true),
];

/// Unsuffixed names go to the legacy back end, as on a stock Debian 12 with
/// `update-alternatives` untouched by kube-proxy; tests pick a back end explicitly.
const DEFAULT_BACK_END: &[(&str, &str)] = &[
    ("iptables", "iptables-legacy"),
    ("iptables-save", "iptables-legacy-save"),
    ("iptables-restore", "iptables-legacy-restore"),
    ("ip6tables", "ip6tables-legacy"),
    ("ip6tables-save", "ip6tables-legacy-save"),
    ("ip6tables-restore", "ip6tables-legacy-restore"),
];

/// Where the host keeps tools, in the order a root shell searches.
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Where the xtables binaries dlopen their match and target extensions from.
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// Host files the tools read: iptables resolves `-p tcp` through /etc/protocols.
/// ld.so.cache keeps the guest's library lookups identical to what `ldd` saw here.
const HOST_ETC: &[&str] = &[
    "/etc/protocols",
    "/etc/services",
    "/etc/ethertypes",
    "/etc/ld.so.cache",
];

/// The list init reads, one module file per line in load order.
const MODULE_LIST: &str = "etc/pathcost-modules";

/// What a VM run needs besides the fixed contents.
pub struct Payload {
    /// Shell script run by init from the workspace directory.
    pub job_script: String,
    /// Host executables to copy, as (path in the guest, path on the host).
    pub executables: Vec<(String, PathBuf)>,
}

pub struct Stats {
    pub entries: usize,
    pub bytes: u64,
}

/// Writes the initramfs for `kernel` to `out`.
pub fn build(
    kernel: &Kernel,
    modules: &ModulePlan,
    payload: &Payload,
    out: &Path,
) -> Result<Stats> {
    let file = File::create(out).with_context(|| format!("failed to create {}", out.display()))?;
    let mut archive = NewcWriter::new(BufWriter::new(file));
    add_contents(&mut archive, kernel, modules, payload)
        .with_context(|| format!("failed to write the initramfs {}", out.display()))?;
    let entries = archive.entries();
    archive
        .finish()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .with_context(|| format!("failed to write {}", out.display()))?;
    let bytes = fs::metadata(out)?.len();
    Ok(Stats { entries, bytes })
}

fn add_contents<W: Write>(
    archive: &mut NewcWriter<W>,
    kernel: &Kernel,
    modules: &ModulePlan,
    payload: &Payload,
) -> Result<()> {
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "mnt", "tests"] {
        archive.dir(dir)?;
    }
    // The kernel opens /dev/console for init's stdio before /init can mount
    // devtmpfs; without this node init's output would go nowhere.
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.file("init", 0o755, INIT.as_bytes())?;
    archive.file("job.sh", 0o755, payload.job_script.as_bytes())?;
    archive.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    archive.file("etc/group", 0o644, b"root:x:0:\n")?;
    for path in HOST_ETC {
        if let Ok(data) = fs::read(path) {
            archive.file(path, 0o644, &data)?;
        }
    }
    add_modules(archive, kernel, modules)?;

    // Every ELF file copied in, for one `ldd` call at the end.
    let mut elves: Vec<PathBuf> = vec![PathBuf::from(BUSYBOX)];
    archive.file(BUSYBOX, 0o755, &read(Path::new(BUSYBOX))?)?;
    let shipped = add_tools(archive, &mut elves)?;
    add_busybox_applets(archive, &shipped)?;
    add_xtables_extensions(archive, &mut elves)?;
    for (guest, host) in &payload.executables {
        archive.file(guest, 0o755, &read(host)?)?;
        elves.push(host.clone());
    }
    for library in shared_libraries(&elves)? {
        archive.file(&library.to_string_lossy(), 0o755, &read(&library)?)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("failed to read {}", path.display()))
}

/// Modules go in decompressed: busybox's insmod reads plain ELF only.
fn add_modules<W: Write>(
    archive: &mut NewcWriter<W>,
    kernel: &Kernel,
    plan: &ModulePlan,
) -> Result<()> {
    let mut list = String::new();
    for module in &plan.load_order {
        let host = kernel.modules_dir.join(&module.path);
        let (plain, data) = if let Some(plain) = module.path.strip_suffix(".xz") {
            (
                plain,
                cmd::stdout_bytes(Command::new("xz").arg("-dc").arg(&host))?,
            )
        } else if let Some(plain) = module.path.strip_suffix(".zst") {
            (
                plain,
                cmd::stdout_bytes(Command::new("zstd").arg("-dcq").arg(&host))?,
            )
        } else if let Some(plain) = module.path.strip_suffix(".gz") {
            (
                plain,
                cmd::stdout_bytes(Command::new("gzip").arg("-dc").arg(&host))?,
            )
        } else {
            (module.path.as_str(), read(&host)?)
        };
        let guest = format!("/lib/modules/{}/{plain}", kernel.release);
        archive.file(&guest, 0o644, &data)?;
        list.push_str(&guest);
        list.push('\n');
    }
    archive.file(MODULE_LIST, 0o644, list.as_bytes())?;
    Ok(())
}

/// Copies the tools into /usr/sbin; returns the names now provided there, which
/// busybox applets must not shadow.
fn add_tools<W: Write>(
    archive: &mut NewcWriter<W>,
    elves: &mut Vec<PathBuf>,
) -> Result<HashSet<String>> {
    let mut shipped = HashSet::new();
    let mut missing = Vec::new();
    for &(name, required) in TOOLS {
        let Some(found) = TOOL_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists())
        else {
            if required {
                missing.push(name);
            }
            continue;
        };
        let real = found
            .canonicalize()
            .with_context(|| format!("failed to resolve {}", found.display()))?;
        let real_name = real
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", real.display()))?;
        if archive.file(&format!("usr/sbin/{real_name}"), 0o755, &read(&real)?)? {
            elves.push(real.clone());
        }
        shipped.insert(real_name.to_owned());
        if real_name != name {
            archive.symlink(&format!("usr/sbin/{name}"), real_name)?;
        }
        shipped.insert(name.to_owned());
    }
    if !missing.is_empty() {
        bail!(
            "tools for the VM not found in {}: {} (`cargo xtask setup` installs them)",
            TOOL_DIRS.join(":"),
            missing.join(", ")
        );
    }
    for &(alias, tool) in DEFAULT_BACK_END {
        if shipped.contains(tool) {
            archive.symlink(&format!("usr/sbin/{alias}"), tool)?;
            shipped.insert(alias.to_owned());
        }
    }
    Ok(shipped)
}

/// One symlink per applet, at the path busybox itself lists, except where a real
/// tool of the same name ships (busybox's `ip` lacks what the tests use).
fn add_busybox_applets<W: Write>(
    archive: &mut NewcWriter<W>,
    shipped: &HashSet<String>,
) -> Result<()> {
    let applets = cmd::stdout(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        if shipped.contains(name) || archive.contains(applet) {
            continue;
        }
        archive.symlink(applet, BUSYBOX)?;
    }
    Ok(())
}

fn add_xtables_extensions<W: Write>(
    archive: &mut NewcWriter<W>,
    elves: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries =
        fs::read_dir(XTABLES_DIR).with_context(|| format!("failed to list {XTABLES_DIR}"))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "so") {
            archive.file(&path.to_string_lossy(), 0o644, &read(&path)?)?;
            elves.push(path);
        }
    }
    Ok(())
}

/// The libraries (and the dynamic loader) that `elves` need, from one `ldd` call.
fn shared_libraries(elves: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut ldd = Command::new("ldd");
    ldd.args(elves);
    let output = cmd::output(&mut ldd)?;
    // ldd exits non-zero when any file is static (busybox); that alone is fine.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let only_static = stderr
        .lines()
        .all(|line| line.trim().is_empty() || line.contains("not a dynamic executable"));
    if !only_static {
        cmd::check(&ldd, &output)?;
    }
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
}

/// Library paths from `ldd` output, in order, without duplicates. Understands
/// `libx.so.1 => /lib/.../libx.so.1 (0x...)` and `/lib64/ld-linux-x86-64.so.2
/// (0x...)`; skips the vDSO and the `file:` headers of a multi-file call.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut seen = HashSet::new();
    let mut libraries = Vec::new();
    for line in output.lines().map(str::trim) {
        let paths = if let Some((name, target)) = line.split_once("=>") {
            let (name, target) = (name.trim(), target.trim());
            if target.starts_with("not found") {
                bail!("ldd: {name} not found (needed by a file copied into the VM)");
            }
            // `/lib64/ld-linux-x86-64.so.2 => /usr/lib64/...`: binaries name the
            // loader by its left-hand path, so both must exist in the guest.
            [Some(name), target.split(" (").next()]
        } else if line.starts_with('/') && line.contains(" (0x") {
            [line.split(" (").next(), None]
        } else {
            continue;
        };
        for path in paths.into_iter().flatten().map(str::trim) {
            // Bare sonames and `libfoo.so => (0x...)` (an old vDSO style) are no paths.
            if path.starts_with('/') && seen.insert(path.to_owned()) {
                libraries.push(PathBuf::from(path));
            }
        }
    }
    Ok(libraries)
}

const NEWC_MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A streaming writer of the "new ASCII" cpio format the kernel unpacks
/// (Documentation/driver-api/early-userspace/buffer-format.rst). Parent directories
/// are created on demand; a path already written is skipped, so callers may add the
/// same shared library twice.
pub struct NewcWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    paths: HashSet<String>,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            paths: HashSet::new(),
        }
    }

    pub fn entries(&self) -> usize {
        self.paths.len()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.paths.contains(archive_path(path))
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = archive_path(path);
        if path.is_empty() || self.paths.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    /// Returns false, writing nothing, if `path` is already in the archive.
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> Result<bool> {
        self.leaf(path, S_IFREG | permissions, (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<bool> {
        self.leaf(path, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<bool> {
        self.leaf(path, S_IFCHR | permissions, (major, minor), &[])
    }

    /// Writes the trailer entry that ends the archive and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn leaf(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<bool> {
        let path = archive_path(path);
        if self.paths.contains(path) {
            return Ok(false);
        }
        self.parents(path)?;
        self.entry(path, mode, 1, rdev, data)?;
        Ok(true)
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        match path.rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(path, ino, mode, nlink, rdev, data.len())?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()?;
        self.paths.insert(path.to_owned());
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: usize,
    ) -> Result<()> {
        let size = u32::try_from(size).with_context(|| format!("{name} is too large for newc"))?;
        let name_size = u32::try_from(name.len() + 1).context("path too long for newc")?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check;
        // mtime 0 keeps the archive reproducible.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110 + name.len() + 1);
        header.push_str(NEWC_MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        header.push_str(name);
        header.push('\0');
        self.out.write_all(header.as_bytes())?;
        self.written += header.len() as u64;
        self.pad()
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) -> Result<()> {
        let padding = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0; 3][..padding])?;
        self.written += padding as u64;
        Ok(())
    }
}

/// Archive names are relative (`bin/busybox`); callers may write host-style paths.
fn archive_path(path: &str) -> &str {
    path.trim_start_matches('/').trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry {
        name: String,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// A deliberately independent reader, strict about alignment.
    fn parse(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "entry not aligned");
            let header = std::str::from_utf8(&archive[at..at + 110]).unwrap();
            assert_eq!(&header[..6], NEWC_MAGIC);
            let field = |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (mode, nlink, size, rdev, name_size) = (
                field(1),
                field(4),
                field(6) as usize,
                (field(9), field(10)),
                field(11) as usize,
            );
            let name_end = at + 110 + name_size;
            assert_eq!(archive[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&archive[at + 110..name_end - 1])
                .unwrap()
                .to_owned();
            let data_at = name_end.next_multiple_of(4);
            assert!(archive[name_end..data_at].iter().all(|&b| b == 0));
            let data = archive[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            let done = name == TRAILER;
            entries.push(Entry {
                name,
                mode,
                nlink,
                rdev,
                data,
            });
            if done {
                assert_eq!(at, archive.len(), "bytes after the trailer");
                return entries;
            }
        }
    }

    #[test]
    fn newc_round_trip() {
        let mut archive = NewcWriter::new(Vec::new());
        assert!(archive.file("/bin/busybox", 0o755, b"\x7fELF").unwrap());
        assert!(archive.symlink("bin/sh", "/bin/busybox").unwrap());
        assert!(!archive.file("bin/busybox", 0o755, b"again").unwrap());
        archive.char_device("dev/console", 0o600, 5, 1).unwrap();
        archive.file("init", 0o755, b"#!/bin/busybox sh\n").unwrap();
        let bytes = archive.finish().unwrap();

        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                TRAILER
            ]
        );
        assert_eq!(entries[0].mode, S_IFDIR | 0o755);
        assert_eq!(entries[0].nlink, 2);
        assert_eq!(entries[1].mode, S_IFREG | 0o755);
        assert_eq!(entries[1].data, b"\x7fELF");
        assert_eq!(entries[2].mode, S_IFLNK | 0o777);
        assert_eq!(entries[2].data, b"/bin/busybox");
        assert_eq!(entries[4].mode, S_IFCHR | 0o600);
        assert_eq!(entries[4].rdev, (5, 1));
        assert_eq!(entries[5].data, b"#!/bin/busybox sh\n");
    }

    #[test]
    fn ldd_output() {
        let output = "\
/usr/sbin/nft:
\tlinux-vdso.so.1 (0x00007ffd5a5f2000)
\tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 (0x00007f3c5a290000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c5a074000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3c5a386000)
/usr/sbin/ipset:
\tlibipset.so.13 => /lib/x86_64-linux-gnu/libipset.so.13 (0x00007f1b1c9e1000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1b1c7ff000)
\t/lib64/ld-linux-x86-64.so.2 => /usr/lib64/ld-linux-x86-64.so.2 (0x00007f1b1ca12000)
";
        let libraries = parse_ldd(output).unwrap();
        let libraries: Vec<&str> = libraries.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            libraries,
            [
                "/lib/x86_64-linux-gnu/libnftables.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/libipset.so.13",
                "/usr/lib64/ld-linux-x86-64.so.2",
            ]
        );
        let err = parse_ldd("\tlibgone.so.2 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libgone.so.2 not found"), "{err}");
    }
}

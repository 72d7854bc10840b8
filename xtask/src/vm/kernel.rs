//! Debian kernels for the test VM: pick the newest package of each series, download
//! and unpack it once into `target/vm-cache/`, and work out which modules to load.
//!
//! Package names move with every Debian point release, so they are resolved with
//! apt each time rather than hard-coded; the cache makes a second run offline-capable.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// Modules the VM loads, by name; their dependencies come from `modules.dep` (and
/// `modules.softdep`). Names built into a kernel are skipped silently, names it
/// lacks are reported. Not listed: nft_counter and nf_nat_redirect, which 6.1 and
/// 6.12 build into nf_tables and nf_nat.
pub const WANTED_MODULES: &[&str] = &[
    // The test topology's interfaces.
    "veth",
    "dummy",
    // The workspace share; virtio may be built in, netfs is 9p's dependency from 6.x.
    "9p",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "virtio_pci",
    "virtio_ring",
    "virtio",
    // kube-proxy's iptables mode on the legacy back end.
    "x_tables",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "iptable_raw",
    "nf_conntrack",
    "nf_nat",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "xt_comment",
    "xt_statistic",
    "xt_mark",
    "xt_MASQUERADE",
    "xt_conntrack",
    "xt_addrtype",
    "xt_nat",
    "xt_set",
    "xt_tcpudp",
    "xt_multiport",
    "xt_recent",
    "ipt_REJECT",
    "nf_reject_ipv4",
    // Its nftables mode, and iptables-nft (nft_compat).
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_numgen",
    "nft_nat",
    "nft_masq",
    "nft_reject",
    "nft_reject_ipv4",
    "nft_reject_inet",
    "nft_fib",
    "nft_fib_ipv4",
    "nft_limit",
    "nft_redir",
    // Its IPVS mode with every scheduler (ip_vs_twos is new in 6.7: absent on 6.1).
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_dh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_mh",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_twos",
    // The ipsets IPVS mode matches on.
    "ip_set",
    "ip_set_hash_ip",
    "ip_set_hash_ipport",
    "ip_set_hash_ipportip",
    "ip_set_hash_ipportnet",
    "ip_set_hash_net",
    "ip_set_bitmap_port",
    // The `conntrack` tool.
    "nfnetlink",
    "nf_conntrack_netlink",
];

/// The kernel series the VM suite runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSeries {
    /// Debian 12's own kernel (6.1 LTS).
    #[value(name = "6.1")]
    V6_1,
    /// Debian 12's backports / security kernel (6.12 LTS).
    #[value(name = "6.12")]
    V6_12,
}

impl KernelSeries {
    pub const ALL: [Self; 2] = [Self::V6_1, Self::V6_12];

    pub fn tag(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// Package names are `PREFIX<number>SUFFIX`; the number orders them. The
    /// `-unsigned` images carry the same kernel as the signed ones without pulling
    /// in the signing tool chain's dependencies.
    fn name_pattern(self) -> (&'static str, &'static str) {
        match self {
            Self::V6_1 => ("linux-image-6.1.0-", "-amd64-unsigned"),
            Self::V6_12 => ("linux-image-6.12.", "+deb12-amd64-unsigned"),
        }
    }

    /// The ordering key of a package name in this series, or None if it is not one
    /// (e.g. the `-cloud-`, `-rt-` and `-dbg` flavours).
    fn package_number(self, name: &str) -> Option<u64> {
        let (prefix, suffix) = self.name_pattern();
        let number = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse().ok()
    }

    /// The newest package of this series among `names`.
    fn newest<'a>(self, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        names
            .into_iter()
            .filter_map(|name| Some((self.package_number(name)?, name)))
            .max_by_key(|(number, _)| *number)
            .map(|(_, name)| name)
    }
}

impl fmt::Display for KernelSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// An unpacked kernel package.
#[derive(Debug)]
pub struct Kernel {
    pub package: String,
    /// The Debian package version, e.g. `6.1.162-1`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `uname -r` in the guest, the name of its modules directory.
    pub release: String,
    pub modules_dir: PathBuf,
}

/// apt's package lists are refreshed at most once per xtask run.
#[derive(Default)]
pub struct Apt {
    refreshed: bool,
}

impl Apt {
    fn refresh(&mut self) -> Result<()> {
        if self.refreshed {
            return Ok(());
        }
        self.refreshed = true;
        println!("kernel: refreshing apt's package lists");
        cmd::stdout(Command::new("apt-get").arg("update")).map(drop)
    }
}

/// Makes sure the newest kernel of `series` is downloaded and unpacked under `cache`.
pub fn prepare(series: KernelSeries, cache: &Path, apt: &mut Apt) -> Result<Kernel> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("failed to create {}", debs.display()))?;
    let package = resolve(series, &debs, apt)?;
    let deb = match cached_deb(&debs, &package)? {
        Some(deb) => deb,
        None => match download(&debs, &package) {
            Ok(deb) => deb,
            // Stale lists can name a package the mirror has already replaced.
            Err(err) if !apt.refreshed => {
                eprintln!(
                    "kernel {series}: {err:#}\nkernel {series}: retrying after apt-get update"
                );
                apt.refresh()?;
                let package = resolve(series, &debs, apt)?;
                match cached_deb(&debs, &package)? {
                    Some(deb) => deb,
                    None => download(&debs, &package)?,
                }
            }
            Err(err) => return Err(err),
        },
    };
    let (package, version) = deb_name_parts(&deb)?;
    let root = cache.join(&package);
    extract(&deb, &root)?;
    locate(package, version, &root)
}

/// The newest package name: from apt's lists, refreshed once if they know none, and
/// failing that from the debs already cached (so an offline machine still works).
fn resolve(series: KernelSeries, debs: &Path, apt: &mut Apt) -> Result<String> {
    let (prefix, _) = series.name_pattern();
    let from_apt = || -> Result<Option<String>> {
        let names = cmd::stdout(Command::new("apt-cache").args(["pkgnames", prefix]))?;
        Ok(series.newest(names.lines()).map(str::to_owned))
    };
    let mut problem = None;
    match from_apt() {
        Ok(Some(name)) => return Ok(name),
        Ok(None) => {}
        Err(err) => problem = Some(err),
    }
    if !apt.refreshed {
        match apt.refresh().and_then(|()| from_apt()) {
            Ok(Some(name)) => return Ok(name),
            Ok(None) => {}
            Err(err) => problem = Some(err),
        }
    }
    let cached = cached_packages(debs)?;
    if let Some(name) = series.newest(cached.iter().map(String::as_str)) {
        if let Some(problem) = problem {
            eprintln!("kernel {series}: apt failed ({problem:#}); using the cached {name}");
        }
        return Ok(name.to_owned());
    }
    let why = problem.map_or_else(
        || "apt knows no such package".to_owned(),
        |err| format!("{err:#}"),
    );
    bail!(
        "no {prefix}N{} kernel package found: {why}",
        series.name_pattern().1
    )
}

/// Package names of the `.deb` files in the cache.
fn cached_packages(debs: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(debs).with_context(|| format!("failed to list {}", debs.display()))? {
        let path = entry?.path();
        if let Ok((package, _)) = deb_name_parts(&path) {
            names.push(package);
        }
    }
    Ok(names)
}

fn cached_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(debs).with_context(|| format!("failed to list {}", debs.display()))? {
        let path = entry?.path();
        if deb_name_parts(&path).is_ok_and(|(name, _)| name == package) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// `apt-get download` names files `PACKAGE_VERSION_ARCH.deb`, with `:` (an epoch)
/// written as `%3a`.
fn deb_name_parts(path: &Path) -> Result<(String, String)> {
    let file = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?;
    let stem = file
        .strip_suffix(".deb")
        .with_context(|| format!("{file} is not a .deb"))?;
    let mut parts = stem.split('_');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(package), Some(version), Some(_arch), None) => {
            Ok((package.to_owned(), version.replace("%3a", ":")))
        }
        _ => bail!("{file} is not named PACKAGE_VERSION_ARCH.deb"),
    }
}

/// Downloads into a scratch directory first, so an interrupted download never
/// leaves a truncated `.deb` that a later run would take as cached.
fn download(debs: &Path, package: &str) -> Result<PathBuf> {
    let scratch = debs.join("partial");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)
            .with_context(|| format!("failed to clear {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch)
        .with_context(|| format!("failed to create {}", scratch.display()))?;
    println!("kernel: downloading {package}");
    let started = Instant::now();
    cmd::stdout(
        Command::new("apt-get")
            .current_dir(&scratch)
            .args(["download", package]),
    )?;
    let mut downloaded = None;
    for entry in fs::read_dir(&scratch)? {
        let path = entry?.path();
        if deb_name_parts(&path).is_ok_and(|(name, _)| name == package) {
            downloaded = Some(path);
        }
    }
    let downloaded = downloaded.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            scratch.display()
        )
    })?;
    let file_name = downloaded
        .file_name()
        .context("downloaded .deb has no file name")?;
    let deb = debs.join(file_name);
    fs::rename(&downloaded, &deb).with_context(|| {
        format!(
            "failed to move {} into {}",
            downloaded.display(),
            debs.display()
        )
    })?;
    fs::remove_dir_all(&scratch).ok();
    let size = fs::metadata(&deb).map_or(0, |m| m.len());
    println!(
        "kernel: downloaded {:.1} MiB in {:.1} s",
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    Ok(deb)
}

/// Marker written once a tree is fully unpacked; it names the .deb it came from so a
/// newer upload of the same package is unpacked afresh.
const EXTRACTED_MARKER: &str = ".pathcost-extracted";

fn extract(deb: &Path, root: &Path) -> Result<()> {
    let marker = root.join(EXTRACTED_MARKER);
    let source = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if fs::read_to_string(&marker).is_ok_and(|done| done == source) {
        return Ok(());
    }
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("failed to clear {}", root.display()))?;
    }
    println!("kernel: unpacking {source}");
    let started = Instant::now();
    cmd::stdout(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    // The package ships no modules.dep: its postinst runs depmod on the installed
    // system, so do the same for the unpacked tree.
    let (_, release) = find_vmlinuz(root)?;
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("depmod");
    cmd::stdout(Command::new(depmod).arg("-b").arg(root).arg(&release))?;
    fs::write(&marker, source).with_context(|| format!("failed to write {}", marker.display()))?;
    println!(
        "kernel: unpacked and indexed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The kernel image and its release (`6.1.0-56-amd64`), from `boot/vmlinuz-RELEASE`.
fn find_vmlinuz(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    for entry in
        fs::read_dir(&boot).with_context(|| format!("failed to list {}", boot.display()))?
    {
        let entry = entry?;
        if let Some(release) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            return Ok((entry.path(), release.to_owned()));
        }
    }
    bail!("{} has no vmlinuz-*", boot.display())
}

fn locate(package: String, version: String, root: &Path) -> Result<Kernel> {
    let (vmlinuz, release) = find_vmlinuz(root)?;
    // Debian 12 ships modules in /lib/modules; later releases move them under /usr.
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| root.join(dir).join(&release))
        .find(|dir| dir.join("modules.dep").is_file())
        .with_context(|| format!("{package} has no lib/modules/{release}/modules.dep"))?;
    Ok(Kernel {
        package,
        version,
        vmlinuz,
        release,
        modules_dir,
    })
}

/// A module file to load, relative to the modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: String,
}

/// What to load, dependencies first, and which wanted names this kernel lacks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModulePlan {
    pub load_order: Vec<ModuleFile>,
    pub absent: Vec<String>,
}

impl Kernel {
    pub fn module_plan(&self) -> Result<ModulePlan> {
        let read = |name: &str| {
            let path = self.modules_dir.join(name);
            fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))
        };
        // depmod writes all four; only modules.dep is indispensable.
        let dep = read("modules.dep")?;
        let builtin = read("modules.builtin").unwrap_or_default();
        let softdep = read("modules.softdep").unwrap_or_default();
        let alias = read("modules.alias").unwrap_or_default();
        let index = ModuleIndex::parse(&dep, &builtin, &softdep, &alias);
        Ok(index.plan(WANTED_MODULES))
    }
}

/// `kernel/net/netfilter/x_tables.ko.xz` → `x_tables`. modprobe treats `-` and `_`
/// alike in names, and so do we.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// What depmod knows about a kernel's modules, as far as loading them in order goes.
#[derive(Default)]
pub struct ModuleIndex {
    /// name → (path relative to the modules directory, hard dependencies).
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    /// name → what must be loaded first without a symbol link (modules.softdep
    /// `pre:`), e.g. libcrc32c needs a `crc32c` crypto driver or its init fails.
    soft_pre: HashMap<String, Vec<String>>,
    /// alias → modules providing it (only plain aliases, no wildcards).
    aliases: HashMap<String, Vec<String>>,
}

impl ModuleIndex {
    pub fn parse(dep: &str, builtin: &str, softdep: &str, alias: &str) -> Self {
        let mut index = Self::default();
        for line in dep.lines() {
            let Some((path, needs)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            let needs = needs.split_whitespace().map(module_name).collect();
            index
                .modules
                .insert(module_name(path), (path.to_owned(), needs));
        }
        index.builtin = builtin.lines().map(module_name).collect();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            // `softdep M pre: A B post: C`: keep what follows `pre:` up to `post:`.
            let pre = words
                .skip_while(|&w| w != "pre:")
                .skip(1)
                .take_while(|&w| w != "post:")
                .map(|w| w.replace('-', "_"));
            index
                .soft_pre
                .entry(module.replace('-', "_"))
                .or_default()
                .extend(pre);
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(name), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                if !name.contains(['*', '?', '[']) {
                    index
                        .aliases
                        .entry(name.replace('-', "_"))
                        .or_default()
                        .push(module.replace('-', "_"));
                }
            }
        }
        index
    }

    /// Resolves `wanted` into a load order in which every module comes after its
    /// soft and hard dependencies, and lists the wanted names this kernel lacks.
    pub fn plan(&self, wanted: &[&str]) -> ModulePlan {
        let mut plan = ModulePlan::default();
        let mut seen = HashSet::new();
        for name in wanted {
            let name = name.replace('-', "_");
            if self.modules.contains_key(&name) {
                self.visit(&name, &mut seen, &mut plan.load_order);
            } else if !self.builtin.contains(&name) {
                plan.absent.push(name);
            }
        }
        plan
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<ModuleFile>) {
        let Some((path, needs)) = self.modules.get(name) else {
            return;
        };
        if !seen.insert(name.to_owned()) {
            return;
        }
        for soft in self.soft_pre.get(name).into_iter().flatten() {
            // A soft dependency names a module or an alias; like modprobe, load every
            // module that provides the alias (a built-in provider needs nothing).
            if self.modules.contains_key(soft) {
                self.visit(soft, seen, order);
            } else if !self.builtin.contains(soft) {
                for provider in self.aliases.get(soft).into_iter().flatten() {
                    self.visit(provider, seen, order);
                }
            }
        }
        for need in needs {
            self.visit(need, seen, order);
        }
        order.push(ModuleFile {
            name: name.to_owned(),
            path: path.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_sorts_numerically() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-dbg",
            "linux-image-6.1.0-10-amd64-unsigned",
        ];
        assert_eq!(
            KernelSeries::V6_1.newest(names),
            Some("linux-image-6.1.0-56-amd64-unsigned")
        );
        let names = [
            "linux-image-6.12.9+deb12-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.12.117+deb12-rt-amd64-unsigned",
            "linux-image-6.12.48+deb12-amd64-unsigned",
        ];
        assert_eq!(
            KernelSeries::V6_12.newest(names),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        assert_eq!(
            KernelSeries::V6_12.newest(["linux-image-6.1.0-9-amd64-unsigned"]),
            None
        );
    }

    #[test]
    fn deb_file_names() {
        let (package, version) = deb_name_parts(Path::new(
            "/c/debs/linux-image-6.12.117+deb12-amd64-unsigned_6.12.117-1~deb12u1_amd64.deb",
        ))
        .unwrap();
        assert_eq!(package, "linux-image-6.12.117+deb12-amd64-unsigned");
        assert_eq!(version, "6.12.117-1~deb12u1");
        assert_eq!(
            deb_name_parts(Path::new("x_1%3a2.0_amd64.deb")).unwrap().1,
            "1:2.0"
        );
        assert!(deb_name_parts(Path::new("partial")).is_err());
    }

    const MODULES_DEP: &str = "\
kernel/net/netfilter/ipvs/ip_vs_rr.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko.xz kernel/net/netfilter/nf_conntrack.ko.xz kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/lib/libcrc32c.ko.xz
kernel/net/netfilter/ipvs/ip_vs.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/lib/libcrc32c.ko.xz
kernel/net/netfilter/nf_conntrack.ko.xz: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/lib/libcrc32c.ko.xz
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz:
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz:
kernel/lib/libcrc32c.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/net/veth.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz
kernel/net/9p/9pnet.ko.xz:
";
    const MODULES_SOFTDEP: &str = "# Soft dependencies extracted from modules themselves.
softdep libcrc32c pre: crc32c
softdep xt_LOG pre: nf_log_syslog
softdep veth pre: virtio post: dummy
";
    const MODULES_ALIAS: &str = "alias crc32c crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_generic
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
";
    const MODULES_BUILTIN: &str =
        "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n";

    #[test]
    fn closure_loads_dependencies_first() {
        let index =
            ModuleIndex::parse(MODULES_DEP, MODULES_BUILTIN, MODULES_SOFTDEP, MODULES_ALIAS);
        let plan = index.plan(&[
            "ip_vs_rr",
            "virtio_pci",
            "veth",
            "ip_vs",
            "9pnet_virtio",
            "no_such_thing",
        ]);
        let order: Vec<&str> = plan.load_order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "nf_defrag_ipv6",
                "nf_defrag_ipv4",
                "crc32c_intel",
                "crc32c_generic",
                "libcrc32c",
                "nf_conntrack",
                "ip_vs",
                "ip_vs_rr",
                "veth",
                "9pnet",
                "9pnet_virtio",
            ]
        );
        assert_eq!(
            plan.load_order[0].path,
            "kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz"
        );
        // Built-in virtio_pci is skipped silently; only the unknown name is reported.
        assert_eq!(plan.absent, ["no_such_thing"]);
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/net/netfilter/xt_MASQUERADE.ko.zst"),
            "xt_MASQUERADE"
        );
        assert_eq!(module_name("kernel/fs/nls/nls-utf8.ko"), "nls_utf8");
    }
}

//! Reads the running kernel's BTF so the eBPF programs get the struct member
//! offsets and argument positions of *this* kernel, never hard-coded ones.
//!
//! A small, dependency-free reader of the raw BTF format found under
//! `/sys/kernel/btf/`: vmlinux, and module BTF split on top of it. Parsing
//! walks the type section once, checks every name and type reference, and
//! builds a name index, so the lookups (member offsets through anonymous
//! members, struct sizes, function parameters) are cheap afterwards.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the kernel publishes its BTF: `vmlinux` plus one file per loaded
/// module that was built with BTF.
pub const KERNEL_BTF_DIR: &str = "/sys/kernel/btf";
/// The kernel's own (base) BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_MAGIC_SWAPPED: u16 = 0x9feb;
const HEADER_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;
/// Bound on typedef/modifier chains and anonymous-member nesting. Real kernels
/// stay far below it; it only stops malformed, cyclic BTF from looping.
const MAX_CHAIN: usize = 64;
/// Used when the BTF names no `long` to take the pointer size from (BTF itself
/// records no pointer size; libbpf guesses it the same way).
const DEFAULT_POINTER_SIZE: u32 = 8;

/// Why BTF could not be read, or why a name was not found in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("kernel has no BTF ({} missing): pathcost needs CONFIG_DEBUG_INFO_BTF=y", path.display())]
    NoKernelBtf { path: PathBuf },

    #[error(
        "module {module} has no BTF ({} missing): the module is not loaded, is built into \
         the kernel (then its types are in vmlinux), or the kernel lacks \
         CONFIG_DEBUG_INFO_BTF_MODULES=y",
        path.display()
    )]
    NoModuleBtf { module: String, path: PathBuf },

    #[error("failed to read BTF from {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{origin}: BTF is big-endian (magic reads 0x9feb, the byte-swapped 0xeb9f); \
         only little-endian BTF is supported"
    )]
    BigEndian { origin: String },

    #[error("{origin}: not BTF: magic {found:#06x} at byte 0, expected 0xeb9f")]
    BadMagic { origin: String, found: u16 },

    #[error("{origin}: unsupported BTF version {version} at byte 2 (only version 1 is known)")]
    UnsupportedVersion { origin: String, version: u8 },

    #[error("{origin}: malformed BTF at byte {offset}: {reason}")]
    Malformed {
        origin: String,
        offset: usize,
        reason: String,
    },

    #[error("{origin}: unknown BTF kind {kind} for type id {id} at byte {offset}")]
    UnknownKind {
        origin: String,
        kind: u32,
        id: u32,
        offset: usize,
    },

    #[error("struct {name} not found in BTF of {origin}")]
    StructNotFound { name: String, origin: String },

    #[error(
        "struct {struct_name} has no member {member} (looking up {path:?}) in BTF of {origin}"
    )]
    MemberNotFound {
        struct_name: String,
        path: String,
        member: String,
        origin: String,
    },

    #[error("member path {path:?} of struct {struct_name} is not a dotted list of member names")]
    InvalidPath { struct_name: String, path: String },

    #[error(
        "{struct_name}.{path}: member {member} is `{type_name}`, not an embedded struct or \
         union, so the path cannot go past it (paths never follow pointers)"
    )]
    NotEmbedded {
        struct_name: String,
        path: String,
        member: String,
        type_name: String,
    },

    #[error(
        "{struct_name}.{path} is a {bits}-bit bitfield at bit {bit_offset}: it has no byte \
         offset and size of its own"
    )]
    Bitfield {
        struct_name: String,
        path: String,
        bit_offset: u64,
        bits: u32,
    },

    #[error("function {name} not found in BTF of {origin}")]
    FunctionNotFound { name: String, origin: String },

    #[error("function {function} has no parameter {param} (its parameters: {params})")]
    ParamNotFound {
        function: String,
        param: String,
        params: String,
    },

    #[error("{name} has {count} conflicting definitions in BTF of {origin}: {detail}")]
    Ambiguous {
        name: String,
        count: usize,
        origin: String,
        detail: String,
    },

    #[error("type id {id} (`{type_name}`) has no size: {reason}")]
    NoSize {
        id: u32,
        type_name: String,
        reason: &'static str,
    },

    #[error(
        "type id {id}: typedefs, modifiers or anonymous members nest deeper than {MAX_CHAIN}; \
         the BTF is probably cyclic"
    )]
    TypeCycle { id: u32 },
}

/// Where a member sits inside a struct, as a program reading it needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Byte offset from the start of the outermost struct of the path.
    pub offset: u32,
    /// Size in bytes, through typedefs and qualifiers; arrays count every element.
    pub size: u32,
    /// The member holds a pointer (after typedefs and qualifiers).
    pub is_pointer: bool,
    /// The member's C type, best effort, e.g. `struct sk_buff *` or `char[32]`.
    pub type_name: String,
}

/// Parsed BTF: vmlinux's, or a module's split on top of it.
///
/// Cloning is cheap (the parsed data is shared), which is how a module's BTF
/// keeps its base alive.
#[derive(Clone)]
pub struct Btf {
    layer: Arc<Layer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte common header (include/uapi/linux/btf.h).
    fn trailing_len(self, vlen: usize) -> usize {
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => 12 * vlen,
            Self::Enum | Self::FuncProto => 8 * vlen,
            Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Ptr => "PTR",
            Self::Array => "ARRAY",
            Self::Struct => "STRUCT",
            Self::Union => "UNION",
            Self::Enum => "ENUM",
            Self::Fwd => "FWD",
            Self::Typedef => "TYPEDEF",
            Self::Volatile => "VOLATILE",
            Self::Const => "CONST",
            Self::Restrict => "RESTRICT",
            Self::Func => "FUNC",
            Self::FuncProto => "FUNC_PROTO",
            Self::Var => "VAR",
            Self::Datasec => "DATASEC",
            Self::Float => "FLOAT",
            Self::DeclTag => "DECL_TAG",
            Self::TypeTag => "TYPE_TAG",
            Self::Enum64 => "ENUM64",
        }
    }

    fn is_aggregate(self) -> bool {
        matches!(self, Self::Struct | Self::Union)
    }

    /// Kinds whose `size_or_type` field is a type id rather than a size.
    fn refers_to_type(self) -> bool {
        matches!(
            self,
            Self::Ptr
                | Self::Typedef
                | Self::Volatile
                | Self::Const
                | Self::Restrict
                | Self::Func
                | Self::FuncProto
                | Self::Var
                | Self::DeclTag
                | Self::TypeTag
        )
    }

    /// Kinds that only qualify or rename another type.
    fn is_alias(self) -> bool {
        matches!(
            self,
            Self::Typedef | Self::Volatile | Self::Const | Self::Restrict | Self::TypeTag
        )
    }
}

/// One type's common header; `data` is where its trailing data starts in the blob.
#[derive(Debug, Clone, Copy)]
struct RawType {
    name_off: u32,
    kind: Kind,
    kind_flag: bool,
    vlen: u16,
    size_or_type: u32,
    data: u32,
}

/// One struct/union member, its bit offset decoded.
#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for bitfields declared through `kind_flag`.
    bitfield_size: u32,
}

/// The ids that carry one name; almost every name has exactly one.
#[derive(Debug)]
enum NamedIds {
    One(u32),
    Many(Vec<u32>),
}

impl NamedIds {
    fn push(&mut self, id: u32) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, id]),
            Self::Many(ids) => ids.push(id),
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Self::One(id) => std::slice::from_ref(id),
            Self::Many(ids) => ids,
        }
    }
}

/// The Fx hash (rustc's): BTF names are not attacker-chosen, and with the
/// default SipHash parsing vmlinux took ~1.5x as long (measured on 6.18).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type NameIndex = HashMap<Box<[u8]>, NamedIds, BuildHasherDefault<FxHasher>>;

/// One BTF file: vmlinux, or a module's split BTF whose ids and string
/// offsets continue those of `base`.
struct Layer {
    origin: String,
    blob: Box<[u8]>,
    /// Type id of `types[0]`: 1 for base BTF, base's last id + 1 for split BTF.
    first_id: u32,
    types: Vec<RawType>,
    /// String offset of this file's string section: 0 for base BTF, the end of
    /// the base's strings for split BTF.
    first_str_off: u32,
    strings_start: usize,
    strings_len: usize,
    names: NameIndex,
    pointer_size: u32,
    base: Option<Btf>,
}

impl Layer {
    fn next_id(&self) -> u32 {
        // Fits: parse() bounds the type count by the blob's size.
        self.first_id + self.types.len() as u32
    }

    fn strings_end(&self) -> u32 {
        self.first_str_off + self.strings_len as u32
    }

    fn u32_at(&self, pos: usize) -> u32 {
        read_u32(&self.blob, pos)
    }
}

fn read_u32(bytes: &[u8], pos: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[pos..pos + 4]);
    u32::from_le_bytes(word)
}

/// A type together with the layer that holds its trailing data.
#[derive(Clone, Copy)]
struct TypeRef<'a> {
    raw: RawType,
    layer: &'a Layer,
}

impl<'a> TypeRef<'a> {
    fn kind(&self) -> Kind {
        self.raw.kind
    }

    fn data_u32(&self, index: usize) -> u32 {
        self.layer.u32_at(self.raw.data as usize + 4 * index)
    }

    fn members(&self) -> impl Iterator<Item = Member> + 'a {
        let this = *self;
        let count = if this.kind().is_aggregate() {
            usize::from(this.raw.vlen)
        } else {
            0
        };
        (0..count).map(move |i| {
            let offset = this.data_u32(3 * i + 2);
            let (bit_offset, bitfield_size) = if this.raw.kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Member {
                name_off: this.data_u32(3 * i),
                type_id: this.data_u32(3 * i + 1),
                bit_offset,
                bitfield_size,
            }
        })
    }

    /// FUNC_PROTO parameters as (name offset, type id).
    fn params(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        let this = *self;
        let count = if this.kind() == Kind::FuncProto {
            usize::from(this.raw.vlen)
        } else {
            0
        };
        (0..count).map(move |i| (this.data_u32(2 * i), this.data_u32(2 * i + 1)))
    }
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("origin", &self.layer.origin)
            .field("first_id", &self.layer.first_id)
            .field("types", &self.layer.types.len())
            .field("base", &self.layer.base)
            .finish()
    }
}

impl Btf {
    /// Parses standalone (base) BTF, e.g. a copy of vmlinux's.
    pub fn from_bytes(bytes: &[u8]) -> Result<Btf, BtfError> {
        Self::parse(bytes.into(), "in-memory BTF".to_owned(), None)
    }

    /// Parses split BTF (a module's) whose type ids and string offsets continue
    /// those of `base`; lookups in it also find `base`'s types.
    pub fn from_split(bytes: &[u8], base: &Btf) -> Result<Btf, BtfError> {
        let origin = format!("in-memory split BTF on {}", base.origin());
        Self::parse(bytes.into(), origin, Some(base.clone()))
    }

    /// Reads and parses standalone BTF from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf, BtfError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::parse(bytes.into(), path.display().to_string(), None)
    }

    /// Reads and parses split BTF from a file, on top of `base`.
    pub fn from_split_file(path: impl AsRef<Path>, base: &Btf) -> Result<Btf, BtfError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::parse(bytes.into(), path.display().to_string(), Some(base.clone()))
    }

    /// The running kernel's BTF.
    pub fn vmlinux() -> Result<Btf, BtfError> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            return Err(BtfError::NoKernelBtf {
                path: path.to_owned(),
            });
        }
        Self::from_file(path)
    }

    /// A loaded module's BTF (`/sys/kernel/btf/<name>`), split on `base`
    /// (normally [`Btf::vmlinux`]).
    pub fn module(name: &str, base: &Btf) -> Result<Btf, BtfError> {
        let path = Path::new(KERNEL_BTF_DIR).join(name);
        if name.is_empty() || name.contains('/') || !path.exists() {
            return Err(BtfError::NoModuleBtf {
                module: name.to_owned(),
                path,
            });
        }
        Self::from_split_file(&path, base)
    }

    /// Names of the modules that currently publish BTF, sorted. Empty when every
    /// module in question is built in (their types are then in vmlinux) or the
    /// kernel has no module support.
    pub fn module_names() -> Result<Vec<String>, BtfError> {
        let dir = Path::new(KERNEL_BTF_DIR);
        let entries = std::fs::read_dir(dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BtfError::NoKernelBtf {
                    path: PathBuf::from(VMLINUX_BTF),
                }
            } else {
                BtfError::Read {
                    path: dir.to_owned(),
                    source,
                }
            }
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| BtfError::Read {
                path: dir.to_owned(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "vmlinux" {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Where this BTF came from: a path, or a note that it was given as bytes.
    pub fn origin(&self) -> &str {
        &self.layer.origin
    }

    /// The highest type id, counting the base's ids for split BTF (what
    /// `bpftool btf dump` shows last).
    pub fn last_type_id(&self) -> u32 {
        self.layer.next_id() - 1
    }

    /// Where the next split BTF on top of this one starts its string offsets.
    pub fn strings_end(&self) -> u32 {
        self.layer.strings_end()
    }

    /// Whether a struct or union (or a typedef of one) has this name.
    pub fn has_struct(&self, name: &str) -> bool {
        !self.aggregates_named(name).is_empty()
    }

    /// Whether a function has this name.
    pub fn has_func(&self, name: &str) -> bool {
        self.ids_named(name)
            .any(|id| self.ty(id).is_some_and(|t| t.kind() == Kind::Func))
    }

    /// Size in bytes of a struct or union (or a typedef of one).
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let candidates = self.aggregates_named(name);
        if candidates.is_empty() {
            return Err(self.struct_not_found(name));
        }
        let results: Vec<_> = candidates.iter().map(|&id| self.type_size(id)).collect();
        self.agree(name, results, |size| size.to_string())
    }

    /// Byte offset of a member of a struct or union. `path` names embedded
    /// members separated by dots (`"table.name"`); members of anonymous
    /// structs and unions are found as C finds them. A path never goes
    /// through a pointer.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        self.member_info(struct_name, path).map(|info| info.offset)
    }

    /// Offset, size and kind of a member; see [`Btf::member_offset`] for `path`.
    ///
    /// A bitfield is an error, except one that starts on a byte and spans whole
    /// bytes, which reads like a plain integer.
    pub fn member_info(&self, struct_name: &str, path: &str) -> Result<MemberInfo, BtfError> {
        let candidates = self.aggregates_named(struct_name);
        if candidates.is_empty() {
            return Err(self.struct_not_found(struct_name));
        }
        let results: Vec<_> = candidates
            .iter()
            .map(|&id| self.member_in(id, struct_name, path))
            .collect();
        self.agree(struct_name, results, |info| {
            format!("offset {} size {}", info.offset, info.size)
        })
    }

    /// A function's parameters in order, as (name, C type) pairs, e.g.
    /// `("skb", "struct sk_buff *")`. The `...` of a variadic function is left out.
    pub fn func_params(&self, func_name: &str) -> Result<Vec<(String, String)>, BtfError> {
        let funcs: Vec<u32> = self
            .ids_named(func_name)
            .filter(|&id| self.ty(id).is_some_and(|t| t.kind() == Kind::Func))
            .collect();
        if funcs.is_empty() {
            return Err(BtfError::FunctionNotFound {
                name: func_name.to_owned(),
                origin: self.origin().to_owned(),
            });
        }
        let results: Vec<_> = funcs.iter().map(|&id| self.params_of(id)).collect();
        self.agree(func_name, results, |params| {
            format!("({})", join_params(params))
        })
    }

    /// Position (0-based) of a function's parameter, e.g. where `skb` is passed.
    pub fn func_param_index(&self, func_name: &str, param: &str) -> Result<usize, BtfError> {
        let params = self.func_params(func_name)?;
        params
            .iter()
            .position(|(name, _)| name == param)
            .ok_or_else(|| BtfError::ParamNotFound {
                function: func_name.to_owned(),
                param: param.to_owned(),
                params: join_params(&params),
            })
    }
}

// Parsing.
impl Btf {
    fn parse(blob: Box<[u8]>, origin: String, base: Option<Btf>) -> Result<Btf, BtfError> {
        let malformed = |offset: usize, reason: String| BtfError::Malformed {
            origin: origin.clone(),
            offset,
            reason,
        };

        if u32::try_from(blob.len()).is_err() {
            return Err(malformed(
                0,
                format!("{} bytes, BTF is limited to 4 GiB", blob.len()),
            ));
        }
        if blob.len() < 4 {
            return Err(malformed(
                0,
                format!("{} bytes, too short for a BTF header", blob.len()),
            ));
        }
        let magic = u16::from_le_bytes([blob[0], blob[1]]);
        if magic == BTF_MAGIC_SWAPPED {
            return Err(BtfError::BigEndian { origin });
        }
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic {
                origin,
                found: magic,
            });
        }
        if blob[2] != 1 {
            return Err(BtfError::UnsupportedVersion {
                origin,
                version: blob[2],
            });
        }
        if blob.len() < HEADER_LEN {
            return Err(malformed(
                0,
                format!(
                    "{} bytes, shorter than the {HEADER_LEN}-byte BTF header",
                    blob.len()
                ),
            ));
        }
        let hdr_len = read_u32(&blob, 4) as usize;
        if hdr_len < HEADER_LEN || hdr_len > blob.len() {
            return Err(malformed(
                4,
                format!(
                    "header length {hdr_len} outside {HEADER_LEN}..={}",
                    blob.len()
                ),
            ));
        }
        let section = |field: usize, what: &str| -> Result<(usize, usize), BtfError> {
            let off = read_u32(&blob, field) as u64;
            let len = read_u32(&blob, field + 4) as u64;
            let start = hdr_len as u64 + off;
            if start + len > blob.len() as u64 {
                return Err(malformed(
                    field,
                    format!(
                        "{what} section (offset {off}, length {len} after the header) ends past \
                         the end of the data ({} bytes)",
                        blob.len()
                    ),
                ));
            }
            Ok((start as usize, len as usize))
        };
        let (types_start, types_len) = section(8, "type")?;
        let (strings_start, strings_len) = section(16, "string")?;

        let (first_id, first_str_off, pointer_size) = match &base {
            Some(base) => (
                base.layer.next_id(),
                base.strings_end(),
                base.layer.pointer_size,
            ),
            None => (1, 0, DEFAULT_POINTER_SIZE),
        };

        let strings = &blob[strings_start..strings_start + strings_len];
        if base.is_none() && strings.first() != Some(&0) {
            return Err(malformed(
                strings_start,
                "string section must start with the empty string".to_owned(),
            ));
        }
        if strings.last().is_some_and(|&b| b != 0) {
            return Err(malformed(
                strings_start + strings_len - 1,
                "string section does not end with a NUL".to_owned(),
            ));
        }
        let strings_end = u64::from(first_str_off) + strings_len as u64;
        if strings_end > u64::from(u32::MAX) {
            return Err(malformed(16, "string offsets overflow 32 bits".to_owned()));
        }

        // Walk the type section once; every kind's trailing data must be
        // skipped exactly or all later types would be garbage.
        let mut types = Vec::with_capacity(types_len / 20);
        let types_end = types_start + types_len;
        let mut pos = types_start;
        while pos < types_end {
            let id = first_id as u64 + types.len() as u64;
            if id > u64::from(u32::MAX) {
                return Err(malformed(
                    pos,
                    "more types than 32-bit ids allow".to_owned(),
                ));
            }
            let id = id as u32;
            if types_end - pos < TYPE_HEADER_LEN {
                return Err(malformed(
                    pos,
                    format!(
                        "type id {id}: {} bytes left in the type section, a type header needs \
                         {TYPE_HEADER_LEN}",
                        types_end - pos
                    ),
                ));
            }
            let name_off = read_u32(&blob, pos);
            let info = read_u32(&blob, pos + 4);
            let size_or_type = read_u32(&blob, pos + 8);
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind).ok_or_else(|| BtfError::UnknownKind {
                origin: origin.clone(),
                kind: raw_kind,
                id,
                offset: pos,
            })?;
            let vlen = (info & 0xffff) as u16;
            let data = pos + TYPE_HEADER_LEN;
            let trailing = kind.trailing_len(usize::from(vlen));
            if types_end - data < trailing {
                return Err(malformed(
                    pos,
                    format!(
                        "type id {id} ({}, vlen {vlen}) needs {trailing} bytes after its header, \
                         {} left in the type section",
                        kind.name(),
                        types_end - data
                    ),
                ));
            }
            types.push(RawType {
                name_off,
                kind,
                kind_flag: info >> 31 == 1,
                vlen,
                size_or_type,
                data: data as u32,
            });
            pos = data + trailing;
        }

        let mut layer = Layer {
            origin,
            blob,
            first_id,
            types,
            first_str_off,
            strings_start,
            strings_len,
            names: NameIndex::default(),
            pointer_size,
            base,
        };
        layer.check_references()?;
        layer.index_names();
        if layer.base.is_none() {
            layer.pointer_size = layer.long_size().unwrap_or(DEFAULT_POINTER_SIZE);
        }
        Ok(Btf {
            layer: Arc::new(layer),
        })
    }
}

impl Layer {
    /// Checks that every name offset and type id points somewhere, so that
    /// lookups later never index out of bounds.
    fn check_references(&self) -> Result<(), BtfError> {
        let next_id = self.next_id();
        let strings_end = self.strings_end();
        let malformed = |offset: usize, reason: String| BtfError::Malformed {
            origin: self.origin.clone(),
            offset,
            reason,
        };
        let check_name = |pos: usize, id: u32| -> Result<(), BtfError> {
            let off = self.u32_at(pos);
            if off >= strings_end {
                return Err(malformed(
                    pos,
                    format!(
                        "type id {id}: name offset {off} is past the strings (end {strings_end})"
                    ),
                ));
            }
            Ok(())
        };
        let check_type = |pos: usize, id: u32| -> Result<(), BtfError> {
            let target = self.u32_at(pos);
            if target >= next_id {
                return Err(malformed(
                    pos,
                    format!(
                        "type id {id} refers to type id {target}, past the last id {}",
                        next_id - 1
                    ),
                ));
            }
            Ok(())
        };

        for (index, raw) in self.types.iter().enumerate() {
            let id = self.first_id + index as u32;
            let header = raw.data as usize - TYPE_HEADER_LEN;
            let data = raw.data as usize;
            let vlen = usize::from(raw.vlen);
            check_name(header, id)?;
            if raw.kind.refers_to_type() {
                check_type(header + 8, id)?;
            }
            match raw.kind {
                Kind::Array => {
                    check_type(data, id)?;
                    check_type(data + 4, id)?;
                }
                Kind::Struct | Kind::Union => {
                    for i in 0..vlen {
                        check_name(data + 12 * i, id)?;
                        check_type(data + 12 * i + 4, id)?;
                    }
                }
                Kind::Enum => {
                    for i in 0..vlen {
                        check_name(data + 8 * i, id)?;
                    }
                }
                Kind::Enum64 => {
                    for i in 0..vlen {
                        check_name(data + 12 * i, id)?;
                    }
                }
                Kind::FuncProto => {
                    for i in 0..vlen {
                        check_name(data + 8 * i, id)?;
                        check_type(data + 8 * i + 4, id)?;
                    }
                }
                Kind::Datasec => {
                    for i in 0..vlen {
                        check_type(data + 12 * i, id)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn index_names(&mut self) {
        let mut names = NameIndex::default();
        names.reserve(self.types.len());
        for (index, raw) in self.types.iter().enumerate() {
            let name = self.own_string(raw.name_off);
            if name.is_empty() {
                continue;
            }
            let id = self.first_id + index as u32;
            match names.get_mut(name) {
                Some(ids) => ids.push(id),
                None => {
                    names.insert(name.into(), NamedIds::One(id));
                }
            }
        }
        self.names = names;
    }

    /// A string of this layer or, for offsets before it, of the base.
    fn string(&self, off: u32) -> &[u8] {
        if off < self.first_str_off {
            return match &self.base {
                Some(base) => base.layer.string(off),
                None => b"",
            };
        }
        self.own_string(off)
    }

    fn own_string(&self, off: u32) -> &[u8] {
        let Some(rel) = off.checked_sub(self.first_str_off) else {
            return b"";
        };
        let rel = rel as usize;
        if rel >= self.strings_len {
            return b"";
        }
        let tail = &self.blob[self.strings_start + rel..self.strings_start + self.strings_len];
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..end]
    }

    fn long_size(&self) -> Option<u32> {
        ["long unsigned int", "long int"]
            .iter()
            .filter_map(|name| self.names.get(name.as_bytes()))
            .flat_map(|ids| ids.as_slice().iter())
            .map(|&id| self.types[(id - self.first_id) as usize])
            .find(|raw| raw.kind == Kind::Int)
            .map(|raw| raw.size_or_type)
    }
}

// Lookups.
impl Btf {
    fn ty(&self, id: u32) -> Option<TypeRef<'_>> {
        let mut layer = &*self.layer;
        loop {
            if id >= layer.first_id {
                let raw = *layer.types.get((id - layer.first_id) as usize)?;
                return Some(TypeRef { raw, layer });
            }
            layer = &layer.base.as_ref()?.layer;
        }
    }

    fn name(&self, off: u32) -> Cow<'_, str> {
        String::from_utf8_lossy(self.layer.string(off))
    }

    /// Ids carrying `name`, this layer's first, then the base's.
    fn ids_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = u32> + 'a {
        let mut layers = Vec::new();
        let mut layer = Some(&*self.layer);
        while let Some(l) = layer {
            layers.push(l);
            layer = l.base.as_ref().map(|b| &*b.layer);
        }
        layers.into_iter().flat_map(move |l| {
            l.names
                .get(name.as_bytes())
                .map(NamedIds::as_slice)
                .unwrap_or_default()
                .iter()
                .copied()
        })
    }

    /// Structs and unions called `name`; failing those, typedefs of them.
    fn aggregates_named(&self, name: &str) -> Vec<u32> {
        let direct: Vec<u32> = self
            .ids_named(name)
            .filter(|&id| self.ty(id).is_some_and(|t| t.kind().is_aggregate()))
            .collect();
        if !direct.is_empty() {
            return direct;
        }
        self.ids_named(name)
            .filter(|&id| self.ty(id).is_some_and(|t| t.kind() == Kind::Typedef))
            .filter_map(|id| self.skip_aliases(id).ok())
            .filter(|&id| self.ty(id).is_some_and(|t| t.kind().is_aggregate()))
            .collect()
    }

    /// Follows typedefs, qualifiers and type tags to the type they stand for.
    fn skip_aliases(&self, id: u32) -> Result<u32, BtfError> {
        let mut current = id;
        for _ in 0..MAX_CHAIN {
            match self.ty(current) {
                Some(t) if t.kind().is_alias() => current = t.raw.size_or_type,
                _ => return Ok(current),
            }
        }
        Err(BtfError::TypeCycle { id })
    }

    fn type_size(&self, id: u32) -> Result<u32, BtfError> {
        self.type_size_bounded(id, 0)
    }

    fn type_size_bounded(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_CHAIN {
            return Err(BtfError::TypeCycle { id });
        }
        let resolved = self.skip_aliases(id)?;
        let no_size = |reason| BtfError::NoSize {
            id,
            type_name: self.c_type_name(id),
            reason,
        };
        let Some(t) = self.ty(resolved) else {
            return Err(no_size("it is void"));
        };
        match t.kind() {
            Kind::Int
            | Kind::Enum
            | Kind::Enum64
            | Kind::Struct
            | Kind::Union
            | Kind::Float
            | Kind::Datasec => Ok(t.raw.size_or_type),
            Kind::Ptr => Ok(self.layer.pointer_size),
            Kind::Array => {
                let elem = self.type_size_bounded(t.data_u32(0), depth + 1)?;
                elem.checked_mul(t.data_u32(2))
                    .ok_or_else(|| no_size("array size overflows 32 bits"))
            }
            Kind::Fwd => Err(no_size("it is only declared, never defined")),
            Kind::Func | Kind::FuncProto => Err(no_size("it is a function")),
            Kind::Var | Kind::DeclTag => Err(no_size("it is not a type")),
            Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                unreachable!("skip_aliases resolved aliases")
            }
        }
    }

    /// Finds a member by name in an aggregate, descending into anonymous
    /// members; the bit offset returned is relative to `aggregate`.
    fn find_member(
        &self,
        aggregate: u32,
        name: &str,
        depth: usize,
    ) -> Result<Option<Member>, BtfError> {
        if depth > MAX_CHAIN {
            return Err(BtfError::TypeCycle { id: aggregate });
        }
        let Some(t) = self.ty(aggregate) else {
            return Ok(None);
        };
        for member in t.members() {
            let member_name = self.layer.string(member.name_off);
            if member_name == name.as_bytes() {
                return Ok(Some(member));
            }
            if member_name.is_empty() {
                let inner = self.skip_aliases(member.type_id)?;
                if self.ty(inner).is_some_and(|i| i.kind().is_aggregate()) {
                    if let Some(found) = self.find_member(inner, name, depth + 1)? {
                        return Ok(Some(Member {
                            bit_offset: found.bit_offset.saturating_add(member.bit_offset),
                            ..found
                        }));
                    }
                }
            }
        }
        Ok(None)
    }

    fn member_in(
        &self,
        aggregate: u32,
        struct_name: &str,
        path: &str,
    ) -> Result<MemberInfo, BtfError> {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(BtfError::InvalidPath {
                struct_name: struct_name.to_owned(),
                path: path.to_owned(),
            });
        }
        let mut current = aggregate;
        let mut bit_offset: u64 = 0;
        let mut member = None;
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                let previous: Member = member.expect("set by the previous segment");
                let inner = self.skip_aliases(previous.type_id)?;
                if previous.bitfield_size != 0
                    || !self.ty(inner).is_some_and(|t| t.kind().is_aggregate())
                {
                    return Err(BtfError::NotEmbedded {
                        struct_name: struct_name.to_owned(),
                        path: path.to_owned(),
                        member: segments[i - 1].to_owned(),
                        type_name: self.c_type_name(previous.type_id),
                    });
                }
                current = inner;
            }
            let found =
                self.find_member(current, segment, 0)?
                    .ok_or_else(|| BtfError::MemberNotFound {
                        struct_name: struct_name.to_owned(),
                        path: path.to_owned(),
                        member: (*segment).to_owned(),
                        origin: self.origin().to_owned(),
                    })?;
            bit_offset += u64::from(found.bit_offset);
            member = Some(found);
        }
        let member = member.expect("a path has at least one segment");

        // Without kind_flag, old-style bitfields hide in the INT encoding.
        let mut bits = member.bitfield_size;
        if bits == 0 {
            let resolved = self.skip_aliases(member.type_id)?;
            if let Some(t) = self.ty(resolved).filter(|t| t.kind() == Kind::Int) {
                let encoding = t.data_u32(0);
                let nr_bits = encoding & 0xff;
                let int_offset = (encoding >> 16) & 0xff;
                if int_offset != 0 || u64::from(nr_bits) != u64::from(t.raw.size_or_type) * 8 {
                    bits = nr_bits;
                    bit_offset += u64::from(int_offset);
                }
            }
        }
        let bitfield_error = |bits| BtfError::Bitfield {
            struct_name: struct_name.to_owned(),
            path: path.to_owned(),
            bit_offset,
            bits,
        };
        if !bit_offset.is_multiple_of(8) || !bits.is_multiple_of(8) {
            return Err(bitfield_error(bits));
        }
        let offset = u32::try_from(bit_offset / 8).map_err(|_| bitfield_error(bits))?;
        let size = if bits != 0 {
            bits / 8
        } else {
            self.type_size(member.type_id)?
        };
        let resolved = self.skip_aliases(member.type_id)?;
        Ok(MemberInfo {
            offset,
            size,
            is_pointer: self.ty(resolved).is_some_and(|t| t.kind() == Kind::Ptr),
            type_name: self.c_type_name(member.type_id),
        })
    }

    fn params_of(&self, func: u32) -> Result<Vec<(String, String)>, BtfError> {
        let t = self.ty(func).expect("func ids come from the index");
        let proto_id = t.raw.size_or_type;
        let proto = self
            .ty(proto_id)
            .filter(|p| p.kind() == Kind::FuncProto)
            .ok_or_else(|| BtfError::Malformed {
                origin: t.layer.origin.clone(),
                offset: t.raw.data as usize - 4,
                reason: format!(
                    "function {} (type id {func}) has type id {proto_id}, not a FUNC_PROTO",
                    self.name(t.raw.name_off)
                ),
            })?;
        Ok(proto
            .params()
            // A trailing (no name, void) parameter marks `...`.
            .filter(|&(name_off, type_id)| !(name_off == 0 && type_id == 0))
            .map(|(name_off, type_id)| {
                (self.name(name_off).into_owned(), self.c_type_name(type_id))
            })
            .collect())
    }

    /// Reduces one result per same-named definition to one answer: the first
    /// error if none succeeded, the common value if all that succeeded agree.
    fn agree<T: PartialEq>(
        &self,
        name: &str,
        results: Vec<Result<T, BtfError>>,
        describe: impl Fn(&T) -> String,
    ) -> Result<T, BtfError> {
        let count = results.len();
        let mut first_error = None;
        let mut values = Vec::new();
        for result in results {
            match result {
                Ok(value) => values.push(value),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if values.is_empty() {
            return Err(first_error.expect("at least one candidate"));
        }
        if values.iter().all(|v| *v == values[0]) {
            return Ok(values.swap_remove(0));
        }
        Err(BtfError::Ambiguous {
            name: name.to_owned(),
            count,
            origin: self.origin().to_owned(),
            detail: values
                .iter()
                .map(&describe)
                .collect::<Vec<_>>()
                .join(" vs "),
        })
    }

    fn struct_not_found(&self, name: &str) -> BtfError {
        BtfError::StructNotFound {
            name: name.to_owned(),
            origin: self.origin().to_owned(),
        }
    }

    /// The C spelling of a type, best effort: `const struct sk_buff *`,
    /// `char[16]`, `int (*)(struct net *, struct sock *)`.
    fn c_type_name(&self, id: u32) -> String {
        self.c_type_name_bounded(id, 0)
    }

    fn c_type_name_bounded(&self, id: u32, depth: usize) -> String {
        if depth > MAX_CHAIN {
            return "?".to_owned();
        }
        let Some(t) = self.ty(id) else {
            return "void".to_owned();
        };
        let name = self.name(t.raw.name_off);
        let named = |keyword: &str| {
            if name.is_empty() {
                format!("{keyword} (anon)")
            } else {
                format!("{keyword} {name}")
            }
        };
        let inner = |target: u32| self.c_type_name_bounded(target, depth + 1);
        let target = t.raw.size_or_type;
        match t.kind() {
            Kind::Int | Kind::Float | Kind::Typedef | Kind::Func | Kind::Var | Kind::Datasec => {
                name.into_owned()
            }
            Kind::Struct => named("struct"),
            Kind::Union => named("union"),
            Kind::Enum | Kind::Enum64 => named("enum"),
            Kind::Fwd => named(if t.raw.kind_flag { "union" } else { "struct" }),
            Kind::Ptr => {
                let pointee = self.skip_aliases(target).unwrap_or(target);
                match self.ty(pointee) {
                    Some(p)
                        if p.kind() == Kind::FuncProto
                            && self.ty(target).is_some_and(|d| d.kind() != Kind::Typedef) =>
                    {
                        self.fn_signature(p, "(*)", depth)
                    }
                    _ => {
                        let inner = inner(target);
                        if inner.ends_with('*') {
                            format!("{inner}*")
                        } else {
                            format!("{inner} *")
                        }
                    }
                }
            }
            Kind::Const | Kind::Volatile | Kind::Restrict => {
                let qualifier = match t.kind() {
                    Kind::Const => "const",
                    Kind::Volatile => "volatile",
                    _ => "restrict",
                };
                let on_pointer = self.ty(target).is_some_and(|p| p.kind() == Kind::Ptr);
                let inner = inner(target);
                if on_pointer || t.kind() == Kind::Restrict {
                    format!("{inner} {qualifier}")
                } else if inner.starts_with(&format!("{qualifier} ")) {
                    // A qualified array qualifies its elements, which BTF
                    // often records on both.
                    inner
                } else {
                    format!("{qualifier} {inner}")
                }
            }
            Kind::TypeTag => inner(target),
            Kind::Array => format!("{}[{}]", inner(t.data_u32(0)), t.data_u32(2)),
            Kind::FuncProto => self.fn_signature(t, "", depth),
            Kind::DeclTag => format!("__attribute__((btf_decl_tag(\"{name}\")))"),
        }
    }

    fn fn_signature(&self, proto: TypeRef<'_>, declarator: &str, depth: usize) -> String {
        let ret = self.c_type_name_bounded(proto.raw.size_or_type, depth + 1);
        let params: Vec<String> = proto
            .params()
            .map(|(name_off, type_id)| {
                if name_off == 0 && type_id == 0 {
                    "...".to_owned()
                } else {
                    self.c_type_name_bounded(type_id, depth + 1)
                }
            })
            .collect();
        let params = if params.is_empty() {
            "void".to_owned()
        } else {
            params.join(", ")
        };
        if declarator.is_empty() {
            format!("{ret} ({params})")
        } else {
            format!("{ret} {declarator}({params})")
        }
    }
}

fn join_params(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(name, ty)| format!("{ty} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_file(path: &Path) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    const INT: u32 = 1;
    const PTR: u32 = 2;
    const ARRAY: u32 = 3;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const ENUM: u32 = 6;
    const FWD: u32 = 7;
    const TYPEDEF: u32 = 8;
    const VOLATILE: u32 = 9;
    const CONST: u32 = 10;
    const RESTRICT: u32 = 11;
    const FUNC: u32 = 12;
    const FUNC_PROTO: u32 = 13;
    const VAR: u32 = 14;
    const DATASEC: u32 = 15;
    const FLOAT: u32 = 16;
    const DECL_TAG: u32 = 17;
    const TYPE_TAG: u32 = 18;
    const ENUM64: u32 = 19;

    /// Writes raw BTF the way pahole does, one type at a time.
    struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
        first_str_off: u32,
    }

    impl BtfBuilder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
                first_str_off: 0,
            }
        }

        fn split_on(base: &Btf) -> Self {
            Self {
                types: Vec::new(),
                strings: Vec::new(),
                next_id: base.last_type_id() + 1,
                first_str_off: base.strings_end(),
            }
        }

        fn string(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.first_str_off + self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn raw(
            &mut self,
            name: &str,
            kind: u32,
            kind_flag: bool,
            vlen: u32,
            size_or_type: u32,
            trailing: &[u32],
        ) -> u32 {
            let name_off = self.string(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for word in [name_off, info, size_or_type].iter().chain(trailing) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.raw(name, INT, false, 0, size, &[size * 8])
        }

        fn refer(&mut self, kind: u32, name: &str, target: u32) -> u32 {
            self.raw(name, kind, false, 0, target, &[])
        }

        fn array(&mut self, elem: u32, index: u32, len: u32) -> u32 {
            self.raw("", ARRAY, false, 0, 0, &[elem, index, len])
        }

        /// Members as (name, type, bit offset, bitfield bits); any bitfield
        /// switches the whole aggregate to kind_flag encoding, as pahole does.
        fn aggregate(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let mut trailing = Vec::new();
            for &(member, ty, bit_offset, bits) in members {
                trailing.push(self.string(member));
                trailing.push(ty);
                trailing.push(if kind_flag {
                    bits << 24 | bit_offset
                } else {
                    bit_offset
                });
            }
            self.raw(name, kind, kind_flag, members.len() as u32, size, &trailing)
        }

        fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
            let mut trailing = Vec::new();
            for &(param, ty) in params {
                trailing.push(self.string(param));
                trailing.push(ty);
            }
            self.raw("", FUNC_PROTO, false, params.len() as u32, ret, &trailing)
        }

        fn build(&self) -> Vec<u8> {
            let mut blob = Vec::new();
            blob.extend_from_slice(&0xeb9f_u16.to_le_bytes());
            blob.push(1);
            blob.push(0);
            let words = [
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for word in words {
                blob.extend_from_slice(&word.to_le_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// Ids of the synthetic base types the split test refers to.
    struct Synthetic {
        /// The encoded BTF: every kind, a typedef cycle; the seed of the
        /// BTF fuzz target (tests/tests/fuzz.rs).
        bytes: Vec<u8>,
        btf: Btf,
        pair: u32,
        state_ptr: u32,
        skb_ptr: u32,
        int: u32,
    }

    /// A small kernel-like BTF: every kind, anonymous members, typedefs,
    /// pointers, bitfields and functions.
    fn synthetic() -> Synthetic {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        let uchar = b.int("unsigned char", 1);
        let u8_t = b.refer(TYPEDEF, "u8", uchar);
        let ulong = b.int("long unsigned int", 8);
        let pair = b.aggregate(STRUCT, "pair", 8, &[("lo", int, 0, 0), ("hi", int, 32, 0)]);
        let anon_struct = b.aggregate(STRUCT, "", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
        let anon_union = b.aggregate(
            UNION,
            "",
            8,
            &[("", anon_struct, 0, 0), ("whole", ulong, 0, 0)],
        );
        let skb = b.refer(FWD, "sk_buff", 0);
        let skb_ptr = b.refer(PTR, "", skb);
        let char_t = b.int("char", 1);
        let name_array = b.array(char_t, int, 16);
        // `next` points back at the struct through the PTR defined right after it.
        let state = b.next_id;
        let state_ptr = state + 1;
        b.aggregate(
            STRUCT,
            "packet_state",
            64,
            &[
                ("hook", u8_t, 0, 0),
                ("pf", u8_t, 8, 0),
                ("", anon_union, 64, 0),
                ("next", state_ptr, 128, 0),
                ("skb", skb_ptr, 192, 0),
                ("table", pair, 256, 0),
                ("flags", uchar, 320, 5),
                ("wide", uchar, 328, 8),
                ("name", name_array, 384, 0),
            ],
        );
        assert_eq!(b.refer(PTR, "", state), state_ptr);
        let const_state = b.refer(CONST, "", state);
        let const_state_ptr = b.refer(PTR, "", const_state);
        b.refer(TYPEDEF, "packet_state_t", state);
        let anon_typedefd = b.aggregate(STRUCT, "", 8, &[("x", int, 0, 0), ("y", int, 32, 0)]);
        b.refer(TYPEDEF, "point_t", anon_typedefd);
        let void_ptr = b.refer(PTR, "", 0);
        let uint = b.int("unsigned int", 4);
        let proto = b.func_proto(
            int,
            &[("pkt", const_state_ptr), ("priv", void_ptr), ("n", uint)],
        );
        let do_chain = b.refer(FUNC, "do_chain", proto);

        // The remaining kinds, so that a wrong trailing size would shift every
        // type after them.
        let (drop, accept, big) = (b.string("DROP"), b.string("ACCEPT"), b.string("BIG"));
        b.raw("verdict", ENUM, false, 2, 4, &[drop, 0, accept, 1]);
        b.raw("wide_enum", ENUM64, false, 1, 8, &[big, 0xdead_beef, 0x1]);
        b.raw("double", FLOAT, false, 0, 8, &[]);
        let var = b.raw("counter", VAR, false, 0, int, &[1]);
        b.raw(".data", DATASEC, false, 1, 4, &[var, 0, 4]);
        b.raw("kfunc", DECL_TAG, false, 0, do_chain, &[u32::MAX]);
        let tagged = b.refer(TYPE_TAG, "percpu", int);
        b.refer(VOLATILE, "", tagged);
        b.refer(RESTRICT, "", state_ptr);

        let cb_proto = b.func_proto(int, &[("", skb_ptr), ("", int)]);
        let cb_ptr = b.refer(PTR, "", cb_proto);
        let proto = b.func_proto(int, &[("skb", skb_ptr), ("cb", cb_ptr), ("hook", u8_t)]);
        b.refer(FUNC, "after_all_kinds", proto);
        let const_char = b.refer(CONST, "", char_t);
        let const_char_ptr = b.refer(PTR, "", const_char);
        let variadic = b.func_proto(int, &[("fmt", const_char_ptr), ("", 0)]);
        b.refer(FUNC, "printk_like", variadic);

        // A typedef cycle, which only malformed BTF has.
        let loop_a = b.next_id;
        b.refer(TYPEDEF, "loop_a", loop_a + 1);
        b.refer(TYPEDEF, "loop_b", loop_a);
        b.aggregate(STRUCT, "cyclic", 4, &[("bad", loop_a, 0, 0)]);

        let bytes = b.build();
        let btf = Btf::from_bytes(&bytes).unwrap();
        Synthetic {
            bytes,
            btf,
            pair,
            state_ptr,
            skb_ptr,
            int,
        }
    }

    fn names(params: &[(String, String)]) -> Vec<&str> {
        params.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn pairs(params: &[(String, String)]) -> Vec<(&str, &str)> {
        params
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect()
    }

    /// tracer/tests/fixtures/synthetic.btf, the BTF fuzz target's seed, is
    /// this builder's output; `PATHCOST_UPDATE_FIXTURES=1` rewrites it.
    #[test]
    fn synthetic_btf_fixture_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic.btf");
        let bytes = synthetic().bytes;
        if std::env::var_os("PATHCOST_UPDATE_FIXTURES").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "run with PATHCOST_UPDATE_FIXTURES=1 to refresh {}", path.display());
    }

    #[test]
    fn synthetic_member_offsets() {
        let btf = synthetic().btf;
        let offset = |path| btf.member_offset("packet_state", path).unwrap();
        assert_eq!(offset("hook"), 0);
        assert_eq!(offset("pf"), 1);
        // Through the anonymous union and the anonymous struct inside it.
        assert_eq!(offset("a"), 8);
        assert_eq!(offset("b"), 12);
        assert_eq!(offset("whole"), 8);
        assert_eq!(offset("next"), 16);
        assert_eq!(offset("skb"), 24);
        assert_eq!(offset("table"), 32);
        assert_eq!(offset("table.hi"), 36);
        assert_eq!(offset("wide"), 41);
        assert_eq!(offset("name"), 48);
        assert_eq!(btf.struct_size("packet_state").unwrap(), 64);
        assert_eq!(btf.struct_size("pair").unwrap(), 8);

        // Typedef'd structs, named and anonymous.
        assert_eq!(btf.member_offset("packet_state_t", "table.lo").unwrap(), 32);
        assert_eq!(btf.member_offset("point_t", "y").unwrap(), 4);
        assert_eq!(btf.struct_size("point_t").unwrap(), 8);
        assert!(btf.has_struct("point_t"));
        assert!(!btf.has_struct("sk_buff"), "a FWD is no struct");
    }

    #[test]
    fn synthetic_member_info() {
        let btf = synthetic().btf;
        let info = |path| btf.member_info("packet_state", path).unwrap();
        assert_eq!(
            info("hook"),
            MemberInfo {
                offset: 0,
                size: 1,
                is_pointer: false,
                type_name: "u8".into()
            }
        );
        assert_eq!(
            info("next"),
            MemberInfo {
                offset: 16,
                size: 8,
                is_pointer: true,
                type_name: "struct packet_state *".into()
            }
        );
        assert_eq!(info("skb").type_name, "struct sk_buff *");
        assert_eq!(info("whole").size, 8);
        assert_eq!(
            info("name"),
            MemberInfo {
                offset: 48,
                size: 16,
                is_pointer: false,
                type_name: "char[16]".into()
            }
        );
        assert_eq!(info("table").size, 8);
        assert_eq!(info("wide").size, 1);
    }

    #[test]
    fn synthetic_member_errors() {
        let btf = synthetic().btf;
        let err = |s, p| btf.member_offset(s, p).unwrap_err();
        assert!(
            matches!(
                err("packet_state", "flags"),
                BtfError::Bitfield {
                    bits: 5,
                    bit_offset: 320,
                    ..
                }
            ),
            "{}",
            err("packet_state", "flags")
        );
        assert!(matches!(
            err("packet_state", "next.hook"),
            BtfError::NotEmbedded { .. }
        ));
        assert!(matches!(
            err("packet_state", "hook.x"),
            BtfError::NotEmbedded { .. }
        ));
        assert!(matches!(
            err("packet_state", "table..lo"),
            BtfError::InvalidPath { .. }
        ));
        assert!(matches!(
            err("packet_state", ""),
            BtfError::InvalidPath { .. }
        ));
        let missing = err("packet_state", "table.nope");
        assert!(
            matches!(&missing, BtfError::MemberNotFound { member, .. } if member == "nope"),
            "{missing}"
        );
        assert!(missing.to_string().contains("packet_state"), "{missing}");
        let missing = err("no_such_struct", "x");
        assert!(
            matches!(&missing, BtfError::StructNotFound { name, .. } if name == "no_such_struct")
        );
        // The anonymous members themselves cannot be named.
        assert!(matches!(
            err("packet_state", ""),
            BtfError::InvalidPath { .. }
        ));
        let cyclic = btf.member_info("cyclic", "bad").unwrap_err();
        assert!(matches!(cyclic, BtfError::TypeCycle { .. }), "{cyclic}");
    }

    #[test]
    fn synthetic_func_params() {
        let btf = synthetic().btf;
        assert!(btf.has_func("do_chain"));
        assert!(!btf.has_func("packet_state"));
        assert!(!btf.has_func("nope"));
        assert_eq!(
            pairs(&btf.func_params("do_chain").unwrap()),
            [
                ("pkt", "const struct packet_state *"),
                ("priv", "void *"),
                ("n", "unsigned int")
            ]
        );
        assert_eq!(
            pairs(&btf.func_params("after_all_kinds").unwrap()),
            [
                ("skb", "struct sk_buff *"),
                ("cb", "int (*)(struct sk_buff *, int)"),
                ("hook", "u8")
            ]
        );
        assert_eq!(
            pairs(&btf.func_params("printk_like").unwrap()),
            [("fmt", "const char *")]
        );
        assert_eq!(btf.func_param_index("do_chain", "priv").unwrap(), 1);
        let err = btf.func_param_index("do_chain", "skb").unwrap_err();
        assert!(
            err.to_string().contains("const struct packet_state * pkt"),
            "{err}"
        );
        assert!(matches!(
            btf.func_params("nope").unwrap_err(),
            BtfError::FunctionNotFound { .. }
        ));
    }

    #[test]
    fn synthetic_split_btf_follows_base_types() {
        let Synthetic {
            btf: base,
            pair,
            state_ptr,
            skb_ptr,
            int,
            ..
        } = synthetic();
        let mut b = BtfBuilder::split_on(&base);
        let svc = b.aggregate(
            STRUCT,
            "mod_svc",
            24,
            &[
                ("pkt", state_ptr, 0, 0),
                ("state", pair, 64, 0),
                ("", pair, 128, 0),
            ],
        );
        let svc_ptr = b.refer(PTR, "", svc);
        let proto = b.func_proto(int, &[("svc", svc_ptr), ("skb", skb_ptr)]);
        b.refer(FUNC, "mod_schedule", proto);
        // A name the split BTF takes from the base's strings.
        b.raw("", TYPEDEF, false, 0, svc, &[]);
        let split = Btf::from_split(&b.build(), &base).unwrap();

        assert_eq!(split.last_type_id(), base.last_type_id() + 5);
        assert_eq!(split.member_offset("mod_svc", "state.hi").unwrap(), 12);
        assert_eq!(split.member_offset("mod_svc", "lo").unwrap(), 16);
        assert!(split.member_info("mod_svc", "pkt").unwrap().is_pointer);
        assert_eq!(
            split.member_info("mod_svc", "pkt").unwrap().type_name,
            "struct packet_state *"
        );
        assert_eq!(
            pairs(&split.func_params("mod_schedule").unwrap()),
            [("svc", "struct mod_svc *"), ("skb", "struct sk_buff *")]
        );
        // The base's own types, looked up through the split BTF.
        assert_eq!(split.member_offset("packet_state", "table.lo").unwrap(), 32);
        assert!(split.has_func("do_chain"));
        assert!(!base.has_func("mod_schedule"));

        // Ids past the split's last one are rejected at parse time.
        let mut b = BtfBuilder::split_on(&base);
        let next = b.next_id;
        b.refer(PTR, "", next + 7);
        let err = Btf::from_split(&b.build(), &base).unwrap_err();
        assert!(
            matches!(err, BtfError::Malformed { offset: 32, .. }),
            "{err}"
        );
    }

    #[test]
    fn synthetic_same_name_definitions() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.aggregate(STRUCT, "dup", 8, &[("x", int, 0, 0), ("y", int, 32, 0)]);
        b.aggregate(STRUCT, "dup", 12, &[("x", int, 0, 0), ("z", int, 64, 0)]);
        let btf = Btf::from_bytes(&b.build()).unwrap();
        // Agreeing or only in one: fine. Disagreeing: an error, never a guess.
        assert_eq!(btf.member_offset("dup", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("dup", "z").unwrap(), 8);
        assert!(matches!(
            btf.struct_size("dup").unwrap_err(),
            BtfError::Ambiguous { count: 2, .. }
        ));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.refer(PTR, "", int);
        let good = b.build();
        Btf::from_bytes(&good).unwrap();

        let mut swapped = good.clone();
        swapped.swap(0, 1);
        let err = Btf::from_bytes(&swapped).unwrap_err();
        assert!(matches!(err, BtfError::BigEndian { .. }), "{err}");
        assert!(err.to_string().contains("big-endian"));

        let err = Btf::from_bytes(b"ELF\x7f and more bytes than a header.....").unwrap_err();
        assert!(
            matches!(err, BtfError::BadMagic { found: 0x4c45, .. }),
            "{err}"
        );

        let mut version = good.clone();
        version[2] = 2;
        assert!(matches!(
            Btf::from_bytes(&version).unwrap_err(),
            BtfError::UnsupportedVersion { version: 2, .. }
        ));

        let err = Btf::from_bytes(&good[..10]).unwrap_err();
        assert!(
            matches!(err, BtfError::Malformed { offset: 0, .. }),
            "{err}"
        );

        // Kind 20 in the second type (byte 24 + 16).
        let mut unknown = good.clone();
        unknown[24 + 16 + 7] = 20;
        let err = Btf::from_bytes(&unknown).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::UnknownKind {
                    kind: 20,
                    id: 2,
                    offset: 40,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("kind 20"));

        // A struct claiming more members than the section holds.
        let mut b = BtfBuilder::new();
        b.raw("s", STRUCT, false, 3, 4, &[0, 0, 0]);
        let err = Btf::from_bytes(&b.build()).unwrap_err();
        assert!(
            matches!(err, BtfError::Malformed { offset: 24, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("STRUCT"), "{err}");

        // A name offset past the strings.
        let mut b = BtfBuilder::new();
        b.raw("", INT, false, 0, 4, &[32]);
        let mut bad_name = b.build();
        bad_name[24..28].copy_from_slice(&999_u32.to_le_bytes());
        assert!(matches!(
            Btf::from_bytes(&bad_name).unwrap_err(),
            BtfError::Malformed { offset: 24, .. }
        ));

        // Sections running past the end.
        let mut short = good.clone();
        short.truncate(good.len() - 2);
        assert!(matches!(
            Btf::from_bytes(&short).unwrap_err(),
            BtfError::Malformed { offset: 16, .. }
        ));
    }

    /// The running kernel's BTF, or None (with the reason printed) where there is none.
    fn host_vmlinux() -> Option<Btf> {
        if !Path::new(VMLINUX_BTF).exists() {
            println!("skipped: {VMLINUX_BTF} missing, this kernel has no BTF");
            return None;
        }
        let start = Instant::now();
        let btf = Btf::vmlinux().unwrap();
        println!(
            "parsed {VMLINUX_BTF} ({} types) in {:?}",
            btf.last_type_id(),
            start.elapsed()
        );
        Some(btf)
    }

    #[test]
    fn host_vmlinux_netfilter_layout() {
        let Some(btf) = host_vmlinux() else { return };

        let size = btf.struct_size("nf_hook_state").unwrap();
        let hook = btf.member_info("nf_hook_state", "hook").unwrap();
        let pf = btf.member_info("nf_hook_state", "pf").unwrap();
        assert_eq!((hook.size, pf.size), (1, 1), "hook and pf are u8");
        assert_ne!(hook.offset, pf.offset);
        assert!(hook.offset + hook.size <= size && pf.offset + pf.size <= size);
        println!(
            "nf_hook_state: size {size}, hook {}, pf {}",
            hook.offset, pf.offset
        );

        for (name, path) in [
            ("xt_table", "name"),
            ("nft_chain", "name"),
            ("nft_chain", "table"),
            ("nft_table", "name"),
            ("nft_pktinfo", "skb"),
            ("sk_buff", "len"),
        ] {
            let info = btf.member_info(name, path).unwrap();
            assert!(info.offset + info.size <= btf.struct_size(name).unwrap());
            println!("{name}.{path}: {info:?}");
        }
        assert!(btf.member_info("nft_chain", "table").unwrap().is_pointer);
        assert!(btf.member_info("nft_pktinfo", "skb").unwrap().is_pointer);
        // sk_buff hides most members in anonymous unions and structs.
        assert!(btf.member_info("sk_buff", "dev").unwrap().is_pointer);
        assert!(matches!(
            btf.member_offset("nft_chain", "table.name").unwrap_err(),
            BtfError::NotEmbedded { .. }
        ));
    }

    #[test]
    fn host_vmlinux_hook_function_params() {
        let Some(btf) = host_vmlinux() else { return };
        let expected: [(&str, &[&str]); 3] = [
            ("ipt_do_table", &["priv", "skb", "state"]),
            ("nf_hook_slow", &["skb", "state", "e", "s"]),
            ("nft_do_chain", &["pkt", "priv"]),
        ];
        for (func, params) in expected {
            if !btf.has_func(func) {
                println!("skipped {func}: not in this kernel's BTF");
                continue;
            }
            let found = btf.func_params(func).unwrap();
            println!("{func}: {found:?}");
            assert_eq!(names(&found), params, "{func}");
        }
        assert_eq!(btf.func_param_index("nf_hook_slow", "skb").unwrap(), 0);
        match btf.func_params("ip_vs_schedule") {
            Ok(params) => println!("ip_vs_schedule: {params:?}"),
            Err(err) => println!("ip_vs_schedule: {err}"),
        }
    }

    #[test]
    fn host_module_btf_splits_on_vmlinux() {
        let Some(base) = host_vmlinux() else { return };
        let modules = Btf::module_names().unwrap();
        if modules.is_empty() {
            println!("skipped: no module BTF under {KERNEL_BTF_DIR} (everything is built in)");
        }
        for module in &modules {
            let btf = Btf::module(module, &base).unwrap();
            assert!(btf.last_type_id() >= base.last_type_id(), "{module}");
            // Base types are reachable from every module.
            btf.struct_size("sk_buff").unwrap();
            println!(
                "{module}: {} own types",
                btf.last_type_id() - base.last_type_id()
            );
        }
        let err = Btf::module("surely_not_a_module", &base).unwrap_err();
        assert!(matches!(err, BtfError::NoModuleBtf { .. }), "{err}");
    }

    /// The raw dump of one named STRUCT/FUNC/FUNC_PROTO: its header line and its member lines.
    fn bpftool_block<'a>(dump: &'a str, header: &str) -> Vec<&'a str> {
        let mut lines = dump.lines().skip_while(|l| !l.contains(header));
        let Some(first) = lines.next() else {
            return Vec::new();
        };
        std::iter::once(first)
            .chain(lines.take_while(|l| l.starts_with('\t')))
            .collect()
    }

    fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key))
    }

    #[test]
    fn host_vmlinux_matches_bpftool() {
        let Some(btf) = host_vmlinux() else { return };
        let dump = match Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
            .output()
        {
            Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
            Ok(out) => {
                println!(
                    "skipped: bpftool failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return;
            }
            Err(err) => {
                println!("skipped: bpftool not runnable ({err})");
                return;
            }
        };

        // Same number of types: the walk stayed in step with every kind.
        let last = dump
            .lines()
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<u32>().ok())
            .max()
            .unwrap();
        assert_eq!(btf.last_type_id(), last);

        let mut checked = 0;
        for name in [
            "nf_hook_state",
            "xt_table",
            "nft_chain",
            "nft_table",
            "nft_pktinfo",
            "sk_buff",
        ] {
            let block = bpftool_block(&dump, &format!("STRUCT '{name}' size="));
            assert!(!block.is_empty(), "bpftool has no struct {name}");
            let size: u32 = field(block[0], "size=").unwrap().parse().unwrap();
            assert_eq!(btf.struct_size(name).unwrap(), size, "{name}");
            for line in &block[1..] {
                let member = line.trim().split('\'').nth(1).unwrap();
                if member == "(anon)" || line.contains("bitfield_size=") {
                    continue;
                }
                let bits: u32 = field(line, "bits_offset=").unwrap().parse().unwrap();
                assert_eq!(
                    btf.member_offset(name, member).unwrap(),
                    bits / 8,
                    "{name}.{member}"
                );
                checked += 1;
            }
        }
        println!("{checked} member offsets agree with bpftool");

        for func in ["ipt_do_table", "nf_hook_slow", "nft_do_chain"] {
            let block = bpftool_block(&dump, &format!("FUNC '{func}' type_id="));
            let proto_id = field(block[0], "type_id=").unwrap();
            let proto = bpftool_block(&dump, &format!("[{proto_id}] FUNC_PROTO "));
            let params: Vec<&str> = proto[1..]
                .iter()
                .map(|l| l.trim().split('\'').nth(1).unwrap())
                .collect();
            assert_eq!(names(&btf.func_params(func).unwrap()), params, "{func}");
        }
    }

    #[test]
    fn host_vmlinux_matches_pahole() {
        let Some(btf) = host_vmlinux() else { return };
        for (name, members) in [
            ("nf_hook_state", &["hook", "pf", "net"][..]),
            ("xt_table", &["name", "af"][..]),
        ] {
            let out = match Command::new("pahole")
                .args(["-F", "btf", "-C", name, VMLINUX_BTF])
                .output()
            {
                Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
                Ok(_) | Err(_) => {
                    println!("skipped: pahole not runnable");
                    return;
                }
            };
            for member in members {
                // e.g. "\tu8   hook;   /*     0     1 */"
                let line = out
                    .lines()
                    .find(|l| {
                        l.split(';').next().is_some_and(|decl| {
                            let decl = decl.split('[').next().unwrap_or(decl).trim_end();
                            decl.ends_with(&format!(" {member}"))
                                || decl.ends_with(&format!("*{member}"))
                        })
                    })
                    .unwrap_or_else(|| panic!("pahole shows no {name}.{member}:\n{out}"));
                let offset: u32 = line
                    .split("/*")
                    .nth(1)
                    .and_then(|c| c.split_whitespace().next())
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(
                    btf.member_offset(name, member).unwrap(),
                    offset,
                    "{name}.{member}"
                );
            }
        }
    }
}

//! A small, bounded reader for the pickle inside a `torch.save` zip (`<archive>/data.pkl`).
//!
//! It runs the pickle opcodes `torch.save` emits (protocols 2 to 5) over an arena of values and
//! never constructs arbitrary Python objects: it builds only what a state dict needs (dicts,
//! lists, tuples, strings, numbers, `None`, `OrderedDict`, tensors rebuilt by
//! `torch._utils._rebuild_tensor_v2` from a persistent-id storage reference). Any other class or
//! function (an OmegaConf config, a `defaultdict`, optimizer internals) becomes an opaque value
//! that is carried along and never built, so other entries of a checkpoint dict do not stop the
//! load.
//!
//! Hostile input ends in an error, never a panic or unbounded memory: every length is checked
//! against the bytes left before anything is allocated, and [`Limits`] bound the objects, memo
//! entries, container items, stack, nesting and string bytes one pickle may create. Values live
//! in one flat arena addressed by index, so `BINGET` shares instead of copying (a "billion laughs"
//! costs what its bytes cost), and nothing walks or drops a nested value recursively.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What one pickle may make the reader allocate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes of pickle read at all.
    pub max_input: usize,
    /// Values created (every string, number, container, tensor).
    pub max_objects: usize,
    /// Entries held by lists, tuples and dicts altogether (a dict entry counts two).
    pub max_items: usize,
    /// Distinct memo slots.
    pub max_memo: usize,
    /// Values on the unpickling stack.
    pub max_stack: usize,
    /// Nesting of containers, and of open `MARK`s.
    pub max_depth: usize,
    /// Bytes of strings (and global names) altogether.
    pub max_text: usize,
    /// Dimensions of one tensor.
    pub max_rank: usize,
}

impl Default for Limits {
    /// Far above any released checkpoint (the reference's has ~10k values and depth < 20), low
    /// enough that the worst case stays around a quarter of a gigabyte.
    fn default() -> Self {
        Self {
            max_input: 64 << 20,
            max_objects: 2_000_000,
            max_items: 16_000_000,
            max_memo: 1_000_000,
            max_stack: 1_000_000,
            max_depth: 1000,
            max_text: 32 << 20,
            max_rank: 64,
        }
    }
}

/// Why a pickle was refused; one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleError(pub String);

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PickleError {}

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    /// The dtype of a `torch.<Name>Storage` class.
    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// One little-endian element (`b.len() == self.size()`) as f32.
    fn to_f32(self, b: &[u8]) -> f32 {
        let a = |n: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out[..n].copy_from_slice(&b[..n]);
            out
        };
        match self {
            Self::F64 => f64::from_le_bytes(a(8)) as f32,
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F16 => super::source::half_to_f32(u16::from_le_bytes([b[0], b[1]])),
            Self::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
            Self::I64 => i64::from_le_bytes(a(8)) as f32,
            Self::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Self::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            Self::I8 => b[0] as i8 as f32,
            Self::U8 => b[0] as f32,
            Self::Bool => (b[0] != 0) as u8 as f32,
        }
    }
}

/// A tensor of the pickle: a view (offset, shape, strides, in elements) of one storage, whose
/// bytes are the zip entry `<archive>/data/<storage_key>`. Checked when built: the element count
/// fits in `usize`, and every element the view reaches lies inside the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage_key: String,
    /// The storage class (`FloatStorage`), for messages.
    pub storage_type: String,
    /// `None`: a storage type this reader does not convert (complex, quantized).
    pub dtype: Option<Dtype>,
    pub storage_numel: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn is_contiguous(&self) -> bool {
        let mut expect = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if size != 1 && stride != expect {
                return false;
            }
            expect *= size;
        }
        true
    }

    /// The view's elements in row-major order, as f32, from the storage's bytes.
    pub(crate) fn read_f32(&self, storage: &[u8]) -> Result<Vec<f32>, String> {
        let dtype = self
            .dtype
            .ok_or_else(|| format!("unsupported storage type {}", self.storage_type))?;
        let es = dtype.size();
        let expected = self.storage_numel.checked_mul(es);
        if expected != Some(storage.len()) {
            return Err(format!(
                "storage {} holds {} bytes, the pickle says {} elements of {} bytes",
                self.storage_key,
                storage.len(),
                self.storage_numel,
                es
            ));
        }
        let n = self.numel();
        let element = |at: usize| -> Result<f32, String> {
            at.checked_mul(es)
                .and_then(|start| storage.get(start..start.checked_add(es)?))
                .map(|b| dtype.to_f32(b))
                .ok_or_else(|| format!("element {at} lies outside storage {}", self.storage_key))
        };
        // n <= storage_numel (checked when the tensor was built), so this is bounded by the entry.
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        if self.is_contiguous() {
            let bytes = self
                .offset
                .checked_mul(es)
                .and_then(|start| storage.get(start..start.checked_add(n.checked_mul(es)?)?))
                .ok_or_else(|| format!("view lies outside storage {}", self.storage_key))?;
            out.extend(bytes.chunks_exact(es).map(|b| dtype.to_f32(b)));
            return Ok(out);
        }
        // Strided: walk the indices like an odometer. `offset + sum(shape * stride)` was checked
        // not to overflow, so `at` cannot either.
        let rank = self.shape.len();
        let mut index = vec![0usize; rank];
        let mut at = self.offset;
        for _ in 0..n {
            out.push(element(at)?);
            for d in (0..rank).rev() {
                index[d] += 1;
                at += self.stride[d];
                if index[d] < self.shape[d] {
                    break;
                }
                at -= self.stride[d] * self.shape[d];
                index[d] = 0;
            }
        }
        Ok(out)
    }
}

/// Index of a value in the arena.
type Id = u32;

/// What `BINPERSID` resolves: `('storage', torch.<Type>Storage, key, location, numel)`.
#[derive(Debug, Clone)]
struct StorageRef {
    storage_type: String,
    dtype: Option<Dtype>,
    key: String,
    numel: usize,
}

#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond 64 bits; never part of a tensor description.
    BigInt,
    /// A float; never part of a tensor description.
    Float,
    Str(String),
    /// Contents skipped (nothing a state dict needs is bytes).
    Bytes,
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    /// Sets and frozensets; members dropped.
    Set,
    /// A class or function named by `GLOBAL` (module, name).
    Global(Box<(String, String)>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// An object of a class this reader does not build: the id of the callable that made it.
    Opaque(Id),
}

#[derive(Debug)]
struct Obj {
    node: Node,
    /// Container nesting below this value (scalars 0), for the depth limit.
    depth: u32,
}

/// A parsed pickle: the arena and the value `STOP` returned.
#[derive(Debug)]
pub(crate) struct Pickle {
    objects: Vec<Obj>,
    root: Id,
}

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // protocol 2
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // protocol 4
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // protocol 5
    pub const BYTEARRAY8: u8 = 0x96;
}

/// Names of opcodes this reader refuses, for the message.
fn unsupported_name(code: u8) -> Option<&'static str> {
    Some(match code {
        b'I' => "INT",
        b'L' => "LONG",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'F' => "FLOAT",
        b'P' => "PERSID",
        b'p' => "PUT",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Runs `input` (a whole `data.pkl`) to its `STOP`.
pub(crate) fn parse(input: &[u8], limits: &Limits) -> Result<Pickle, PickleError> {
    if input.len() > limits.max_input {
        return Err(PickleError(format!(
            "pickle of {} bytes is larger than the {} bytes allowed",
            input.len(),
            limits.max_input
        )));
    }
    let mut vm = Vm {
        input,
        pos: 0,
        op_start: 0,
        limits,
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        items: 0,
        text: 0,
    };
    let root = vm.run()?;
    Ok(Pickle {
        objects: vm.objects,
        root,
    })
}

struct Vm<'a> {
    input: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for messages.
    op_start: usize,
    limits: &'a Limits,
    objects: Vec<Obj>,
    stack: Vec<Id>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    items: usize,
    text: usize,
}

impl<'a> Vm<'a> {
    fn err<T>(&self, message: impl fmt::Display) -> Result<T, PickleError> {
        Err(PickleError(format!(
            "pickle byte {}: {message}",
            self.op_start
        )))
    }

    // ---- input ----

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], PickleError> {
        let left = self.input.len() - self.pos;
        if n > left as u64 {
            return self.err(format!(
                "{what} of {n} bytes, but only {left} bytes are left"
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.input[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.array::<1>("an argument")?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.array("an argument")?))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array("an argument")?))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array("an argument")?))
    }

    /// A string of `len` bytes: checked against the input left and the text budget before
    /// anything is allocated.
    fn string(&mut self, len: u64) -> Result<String, PickleError> {
        let bytes = self.take(len, "a string")?;
        self.charge_text(bytes.len())?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn charge_text(&mut self, n: usize) -> Result<(), PickleError> {
        self.text += n;
        if self.text > self.limits.max_text {
            return self.err(format!(
                "more than {} bytes of strings",
                self.limits.max_text
            ));
        }
        Ok(())
    }

    /// A newline-terminated line (`GLOBAL`'s arguments).
    fn line(&mut self) -> Result<String, PickleError> {
        const MAX_LINE: usize = 1024;
        let rest = &self.input[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 1)];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            return self.err(format!(
                "GLOBAL name not ended by a newline within {MAX_LINE} bytes"
            ));
        };
        let line = self.string(end as u64)?;
        self.pos += 1;
        Ok(line)
    }

    // ---- arena and stack ----

    fn new_obj(&mut self, node: Node, depth: u32) -> Result<Id, PickleError> {
        if self.objects.len() >= self.limits.max_objects {
            return self.err(format!(
                "more than {} values (limit)",
                self.limits.max_objects
            ));
        }
        if depth as usize > self.limits.max_depth {
            return self.err(format!(
                "containers nested deeper than {} (limit)",
                self.limits.max_depth
            ));
        }
        self.objects.push(Obj { node, depth });
        Ok((self.objects.len() - 1) as Id)
    }

    fn push_new(&mut self, node: Node) -> Result<(), PickleError> {
        let depth = match node {
            Node::List(_) | Node::Tuple(_) | Node::Dict(_) | Node::Set => 1,
            _ => 0,
        };
        let id = self.new_obj(node, depth)?;
        self.push(id)
    }

    fn push(&mut self, id: Id) -> Result<(), PickleError> {
        if self.stack.len() >= self.limits.max_stack {
            return self.err(format!(
                "more than {} values on the stack (limit)",
                self.limits.max_stack
            ));
        }
        self.stack.push(id);
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        if self.stack.len() <= self.fence() {
            return self.err("stack underflow");
        }
        Ok(self.stack.pop().unwrap_or_default())
    }

    fn top(&self) -> Result<Id, PickleError> {
        if self.stack.len() <= self.fence() {
            return self.err("stack underflow");
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let Some(at) = self.marks.pop() else {
            return self.err("no MARK to pop to");
        };
        Ok(self.stack.split_off(at.min(self.stack.len())))
    }

    fn charge_items(&mut self, n: usize) -> Result<(), PickleError> {
        self.items += n;
        if self.items > self.limits.max_items {
            return self.err(format!(
                "more than {} container entries (limit)",
                self.limits.max_items
            ));
        }
        Ok(())
    }

    fn depth_of(&self, ids: &[Id]) -> u32 {
        ids.iter()
            .map(|&id| self.objects[id as usize].depth)
            .max()
            .unwrap_or(0)
    }

    fn node(&self, id: Id) -> &Node {
        &self.objects[id as usize].node
    }

    fn kind(&self, id: Id) -> &'static str {
        kind(self.node(id))
    }

    fn tuple(&mut self, items: Vec<Id>) -> Result<Id, PickleError> {
        self.charge_items(items.len())?;
        let depth = self.depth_of(&items) + 1;
        self.new_obj(Node::Tuple(items), depth)
    }

    /// Raises a container's recorded depth to hold children of depth `child`.
    fn deepen(&mut self, target: Id, child: u32) -> Result<(), PickleError> {
        let depth = child + 1;
        if depth as usize > self.limits.max_depth {
            return self.err(format!(
                "containers nested deeper than {} (limit)",
                self.limits.max_depth
            ));
        }
        let obj = &mut self.objects[target as usize];
        obj.depth = obj.depth.max(depth);
        Ok(())
    }

    /// APPEND(S): into a list; into an opaque object (a list subclass) they are dropped.
    fn append(&mut self, target: Id, items: Vec<Id>) -> Result<(), PickleError> {
        match self.node(target) {
            Node::List(_) => {}
            Node::Opaque(_) => return Ok(()),
            _ => {
                return self.err(format!("APPEND to a {}", self.kind(target)));
            }
        }
        self.charge_items(items.len())?;
        let child = self.depth_of(&items);
        self.deepen(target, child)?;
        if let Node::List(list) = &mut self.objects[target as usize].node {
            list.extend(items);
        }
        Ok(())
    }

    /// SETITEM(S): into a dict; into an opaque object (a dict subclass) they are dropped.
    fn set_items(&mut self, target: Id, items: Vec<Id>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return self.err("SETITEMS with an odd number of values");
        }
        match self.node(target) {
            Node::Dict(_) => {}
            Node::Opaque(_) => return Ok(()),
            _ => {
                return self.err(format!("SETITEM on a {}", self.kind(target)));
            }
        }
        self.charge_items(items.len())?;
        let child = self.depth_of(&items);
        self.deepen(target, child)?;
        if let Node::Dict(dict) = &mut self.objects[target as usize].node {
            dict.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
        }
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let id = self.top()?;
        if !self.memo.contains_key(&key) && self.memo.len() >= self.limits.max_memo {
            return self.err(format!(
                "more than {} memo entries (limit)",
                self.limits.max_memo
            ));
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let Some(&id) = self.memo.get(&key) else {
            return self.err(format!("memo entry {key} is not set"));
        };
        self.push(id)
    }

    fn int(&self, id: Id) -> Option<i64> {
        match self.node(id) {
            Node::Int(v) => Some(*v),
            Node::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.node(id) {
            Node::Global(g) => Some((g.0.as_str(), g.1.as_str())),
            _ => None,
        }
    }

    // ---- the loop ----

    /// Runs the opcodes up to STOP and returns the value STOP pops: one arm per opcode, each
    /// opcode's work in the section below.
    fn run(&mut self) -> Result<Id, PickleError> {
        loop {
            self.op_start = self.pos;
            if self.pos >= self.input.len() {
                return self.err("the pickle ends without STOP (truncated)");
            }
            let code = self.input[self.pos];
            self.pos += 1;
            match code {
                op::PROTO => self.proto()?,
                op::FRAME => self.frame()?,
                op::STOP => return self.pop(),
                op::MARK => self.mark()?,
                op::POP => self.discard()?,
                op::POP_MARK => drop(self.pop_mark()?),
                op::DUP => self.push(self.top()?)?,
                op::NONE => self.push_new(Node::None)?,
                op::NEWTRUE => self.push_new(Node::Bool(true))?,
                op::NEWFALSE => self.push_new(Node::Bool(false))?,
                op::BININT | op::BININT1 | op::BININT2 => self.binint(code)?,
                op::LONG1 | op::LONG4 => self.long(code)?,
                op::BINFLOAT => self.float()?,
                op::BINUNICODE
                | op::BINSTRING
                | op::SHORT_BINUNICODE
                | op::SHORT_BINSTRING
                | op::BINUNICODE8 => self.push_str(code)?,
                op::BINBYTES | op::SHORT_BINBYTES | op::BINBYTES8 | op::BYTEARRAY8 => {
                    self.skip_bytes(code)?
                }
                op::EMPTY_TUPLE => self.push_tuple(Vec::new())?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => self.small_tuple(code)?,
                op::TUPLE => self.tuple_from_mark()?,
                op::EMPTY_LIST => self.push_new(Node::List(Vec::new()))?,
                op::LIST => self.list_from_mark()?,
                op::EMPTY_DICT => self.push_new(Node::Dict(Vec::new()))?,
                op::DICT => self.dict_from_mark()?,
                op::EMPTY_SET => self.push_new(Node::Set)?,
                op::FROZENSET => self.frozenset()?,
                op::ADDITEMS => self.add_items()?,
                op::APPEND => self.append_one()?,
                op::APPENDS => self.appends()?,
                op::SETITEM => self.set_item()?,
                op::SETITEMS => self.set_items_from_mark()?,
                op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => self.memo_store(code)?,
                op::BINGET | op::LONG_BINGET => self.memo_load(code)?,
                op::GLOBAL => self.read_global()?,
                op::STACK_GLOBAL => self.stack_global()?,
                op::REDUCE => self.reduce()?,
                op::NEWOBJ | op::NEWOBJ_EX => self.new_object(code)?,
                op::BUILD => self.build()?,
                op::BINPERSID => self.persistent_id()?,
                other => return self.unsupported(other),
            }
        }
    }

    // ---- the opcodes ----

    fn proto(&mut self) -> Result<(), PickleError> {
        let version = self.u8()?;
        if version > 5 {
            return self.err(format!("pickle protocol {version} (at most 5 known)"));
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<(), PickleError> {
        let len = self.u64()?;
        let left = (self.input.len() - self.pos) as u64;
        if len > left {
            return self.err(format!(
                "a frame of {len} bytes, but only {left} bytes are left"
            ));
        }
        Ok(())
    }

    fn mark(&mut self) -> Result<(), PickleError> {
        if self.marks.len() >= self.limits.max_depth {
            return self.err(format!(
                "MARKs nested deeper than {} (limit)",
                self.limits.max_depth
            ));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// POP: the top value, or the topmost MARK and what is above it when nothing is.
    fn discard(&mut self) -> Result<(), PickleError> {
        if self.stack.len() > self.fence() {
            self.stack.pop();
        } else {
            self.pop_mark()?;
        }
        Ok(())
    }

    fn binint(&mut self, code: u8) -> Result<(), PickleError> {
        let v = match code {
            op::BININT => self.u32()? as i32 as i64,
            op::BININT1 => self.u8()? as i64,
            _ => self.u16()? as i64,
        };
        self.push_new(Node::Int(v))
    }

    fn long(&mut self, code: u8) -> Result<(), PickleError> {
        let len = if code == op::LONG1 {
            self.u8()? as u64
        } else {
            let n = self.u32()? as i32;
            if n < 0 {
                return self.err("LONG4 with a negative length");
            }
            n as u64
        };
        let bytes = self.take(len, "an integer")?;
        let node = match decode_long(bytes) {
            Some(v) => Node::Int(v),
            None => Node::BigInt,
        };
        self.push_new(node)
    }

    fn float(&mut self) -> Result<(), PickleError> {
        self.array::<8>("a float")?;
        self.push_new(Node::Float)
    }

    fn push_str(&mut self, code: u8) -> Result<(), PickleError> {
        let len = match code {
            op::SHORT_BINUNICODE | op::SHORT_BINSTRING => self.u8()? as u64,
            op::BINUNICODE8 => self.u64()?,
            _ => self.u32()? as u64,
        };
        let s = self.string(len)?;
        self.push_new(Node::Str(s))
    }

    /// Bytes objects are skipped: a state dict never needs their contents.
    fn skip_bytes(&mut self, code: u8) -> Result<(), PickleError> {
        let len = match code {
            op::SHORT_BINBYTES => self.u8()? as u64,
            op::BINBYTES => self.u32()? as u64,
            _ => self.u64()?,
        };
        self.take(len, "a bytes object")?;
        self.push_new(Node::Bytes)
    }

    fn push_tuple(&mut self, items: Vec<Id>) -> Result<(), PickleError> {
        let id = self.tuple(items)?;
        self.push(id)
    }

    /// TUPLE1, TUPLE2, TUPLE3: a tuple of the top one to three values.
    fn small_tuple(&mut self, code: u8) -> Result<(), PickleError> {
        let n = (code - op::TUPLE1 + 1) as usize;
        let mut items = vec![0; n];
        for slot in items.iter_mut().rev() {
            *slot = self.pop()?;
        }
        self.push_tuple(items)
    }

    fn tuple_from_mark(&mut self) -> Result<(), PickleError> {
        let items = self.pop_mark()?;
        self.push_tuple(items)
    }

    fn list_from_mark(&mut self) -> Result<(), PickleError> {
        let items = self.pop_mark()?;
        let id = self.new_obj(Node::List(Vec::new()), 1)?;
        self.append(id, items)?;
        self.push(id)
    }

    fn dict_from_mark(&mut self) -> Result<(), PickleError> {
        let items = self.pop_mark()?;
        let id = self.new_obj(Node::Dict(Vec::new()), 1)?;
        self.set_items(id, items)?;
        self.push(id)
    }

    /// Sets are kept without their members.
    fn frozenset(&mut self) -> Result<(), PickleError> {
        self.pop_mark()?;
        self.push_new(Node::Set)
    }

    fn add_items(&mut self) -> Result<(), PickleError> {
        self.pop_mark()?;
        let target = self.top()?;
        if !matches!(self.node(target), Node::Set | Node::Opaque(_)) {
            return self.err(format!("ADDITEMS to a {}", self.kind(target)));
        }
        Ok(())
    }

    fn append_one(&mut self) -> Result<(), PickleError> {
        let value = self.pop()?;
        let target = self.top()?;
        self.append(target, vec![value])
    }

    fn appends(&mut self) -> Result<(), PickleError> {
        let items = self.pop_mark()?;
        let target = self.top()?;
        self.append(target, items)
    }

    fn set_item(&mut self) -> Result<(), PickleError> {
        let value = self.pop()?;
        let key = self.pop()?;
        let target = self.top()?;
        self.set_items(target, vec![key, value])
    }

    fn set_items_from_mark(&mut self) -> Result<(), PickleError> {
        let items = self.pop_mark()?;
        let target = self.top()?;
        self.set_items(target, items)
    }

    /// BINPUT, LONG_BINPUT, MEMOIZE: the top value into the memo.
    fn memo_store(&mut self, code: u8) -> Result<(), PickleError> {
        let key = match code {
            op::BINPUT => self.u8()? as u32,
            op::LONG_BINPUT => self.u32()?,
            _ => u32::try_from(self.memo.len()).unwrap_or(u32::MAX),
        };
        self.memo_put(key)
    }

    /// BINGET, LONG_BINGET: a memo entry onto the stack.
    fn memo_load(&mut self, code: u8) -> Result<(), PickleError> {
        let key = match code {
            op::BINGET => self.u8()? as u32,
            _ => self.u32()?,
        };
        self.memo_get(key)
    }

    /// GLOBAL: module and name as two lines of the input.
    fn read_global(&mut self) -> Result<(), PickleError> {
        let module = self.line()?;
        let name = self.line()?;
        self.push_new(Node::Global(Box::new((module, name))))
    }

    /// STACK_GLOBAL: module and name as the top two values.
    fn stack_global(&mut self) -> Result<(), PickleError> {
        let name = self.pop()?;
        let module = self.pop()?;
        let (Node::Str(m), Node::Str(n)) = (self.node(module), self.node(name)) else {
            return self.err(format!(
                "STACK_GLOBAL of a {} and a {}, not two strings",
                self.kind(module),
                self.kind(name)
            ));
        };
        let global = Box::new((m.clone(), n.clone()));
        self.charge_text(global.0.len() + global.1.len())?;
        self.push_new(Node::Global(global))
    }

    fn reduce(&mut self) -> Result<(), PickleError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let id = self.call(callable, args, true)?;
        self.push(id)
    }

    /// NEWOBJ, NEWOBJ_EX: `cls.__new__(cls, *args)`; dicts stay dicts, anything else is opaque.
    fn new_object(&mut self, code: u8) -> Result<(), PickleError> {
        if code == op::NEWOBJ_EX {
            self.pop()?; // kwargs
        }
        let args = self.pop()?;
        let class = self.pop()?;
        let id = match self.global(class) {
            Some(("collections", "OrderedDict")) | Some(("__builtin__" | "builtins", "dict")) => {
                self.new_obj(Node::Dict(Vec::new()), 1)?
            }
            _ => {
                let depth = self.depth_of(&[args]) + 1;
                self.new_obj(Node::Opaque(class), depth)?
            }
        };
        self.push(id)
    }

    /// BUILD, `__setstate__`: attributes of an OrderedDict (a state dict's `_metadata`), of
    /// opaque objects or of a tensor subclass. None is needed; all are dropped.
    fn build(&mut self) -> Result<(), PickleError> {
        self.pop()?;
        self.top()?;
        Ok(())
    }

    fn persistent_id(&mut self) -> Result<(), PickleError> {
        let pid = self.pop()?;
        let id = self.persistent_load(pid)?;
        self.push(id)
    }

    fn unsupported<T>(&self, code: u8) -> Result<T, PickleError> {
        match unsupported_name(code) {
            Some(name) => self.err(format!(
                "unsupported pickle opcode {name} (torch.save does not write it)"
            )),
            None => self.err(format!("unknown pickle opcode 0x{code:02x}")),
        }
    }

    /// `persistent_load` of `torch.load`: `('storage', torch.<Type>Storage, key, location, numel)`.
    fn persistent_load(&mut self, pid: Id) -> Result<Id, PickleError> {
        let Node::Tuple(items) = self.node(pid) else {
            return self.err(format!(
                "persistent id is a {}, not a tuple",
                self.kind(pid)
            ));
        };
        let items = items.clone();
        if items.len() != 5 || !matches!(self.node(items[0]), Node::Str(s) if s == "storage") {
            return self.err(format!(
                "persistent id of {} values, not ('storage', type, key, location, numel)",
                items.len()
            ));
        }
        let storage_type = match self.global(items[1]) {
            Some(("torch" | "torch.cuda", name)) if name.ends_with("Storage") => name.to_string(),
            _ => {
                return self.err(format!(
                    "persistent id names a {} as its storage type",
                    self.describe(items[1])
                ));
            }
        };
        let Node::Str(key) = self.node(items[2]) else {
            return self.err(format!(
                "storage key is a {}, not a string",
                self.kind(items[2])
            ));
        };
        let key = key.clone();
        let numel = self
            .int(items[4])
            .and_then(|n| usize::try_from(n).ok())
            .map_or_else(
                || {
                    self.err(format!(
                        "storage {key}: element count is a {}, not a count",
                        self.kind(items[4])
                    ))
                },
                Ok,
            )?;
        self.charge_text(key.len())?;
        let dtype = Dtype::from_storage(&storage_type);
        self.new_obj(
            Node::Storage(Box::new(StorageRef {
                storage_type,
                dtype,
                key,
                numel,
            })),
            0,
        )
    }

    /// `module.name` of a global, else the value's kind.
    fn describe(&self, id: Id) -> String {
        match self.global(id) {
            Some((m, n)) => format!("{m}.{n}"),
            None => self.kind(id).to_string(),
        }
    }

    /// REDUCE: `callable(*args)` for the few callables a state dict needs; anything else is an
    /// opaque value.
    fn call(&mut self, callable: Id, args: Id, outer: bool) -> Result<Id, PickleError> {
        let Node::Tuple(arg_ids) = self.node(args) else {
            return self.err(format!(
                "REDUCE arguments are a {}, not a tuple",
                self.kind(args)
            ));
        };
        let arg_ids = arg_ids.clone();
        let name = self
            .global(callable)
            .map(|(m, n)| (m.to_string(), n.to_string()));
        let opaque = |vm: &mut Self| {
            let depth = vm.depth_of(&[args]) + 1;
            vm.new_obj(Node::Opaque(callable), depth)
        };
        let Some((module, name)) = name else {
            return opaque(self);
        };
        let expect_arity = |vm: &Self, arities: &[usize]| {
            if arities.contains(&arg_ids.len()) {
                return Ok(());
            }
            let expected = arities
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" or ");
            vm.err(format!(
                "{module}.{name} takes {expected} arguments, got {}",
                arg_ids.len()
            ))
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("__builtin__" | "builtins", "dict")
                if arg_ids.is_empty() =>
            {
                self.new_obj(Node::Dict(Vec::new()), 1)
            }
            ("torch._utils", "_rebuild_tensor_v2") => {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                expect_arity(self, &[6, 7])?;
                self.rebuild_tensor(&arg_ids)
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                // (data, requires_grad, backward_hooks[, state]): the parameter is its data.
                let arities: &[usize] = if name == "_rebuild_parameter" {
                    &[3]
                } else {
                    &[4]
                };
                expect_arity(self, arities)?;
                match self.node(arg_ids[0]) {
                    Node::Tensor(_) => Ok(arg_ids[0]),
                    _ => self.err(format!(
                        "{module}.{name} of a {}, not a tensor",
                        self.describe(arg_ids[0])
                    )),
                }
            }
            ("torch._tensor", "_rebuild_from_type_v2") if outer => {
                // (func, new_type, args, state): a tensor subclass; the tensor is func(*args).
                expect_arity(self, &[4])?;
                self.call(arg_ids[0], arg_ids[2], false)
            }
            _ => opaque(self),
        }
    }

    fn rebuild_tensor(&mut self, args: &[Id]) -> Result<Id, PickleError> {
        const WHAT: &str = "torch._utils._rebuild_tensor_v2";
        let Node::Storage(storage) = self.node(args[0]) else {
            return self.err(format!(
                "{WHAT}: argument 1 is a {}, not a storage",
                self.describe(args[0])
            ));
        };
        let storage = (**storage).clone();
        let Some(offset) = self.int(args[1]).and_then(|v| usize::try_from(v).ok()) else {
            return self.err(format!(
                "{WHAT}: storage offset is a {}, not a count",
                self.kind(args[1])
            ));
        };
        let shape = self.counts(args[2], "size")?;
        let stride = self.counts(args[3], "stride")?;
        if stride.len() != shape.len() {
            return self.err(format!(
                "{WHAT}: {} sizes but {} strides",
                shape.len(),
                stride.len()
            ));
        }
        if shape.len() > self.limits.max_rank {
            return self.err(format!(
                "{WHAT}: {} dimensions (at most {})",
                shape.len(),
                self.limits.max_rank
            ));
        }
        let numel = shape.iter().try_fold(1usize, |acc, &s| acc.checked_mul(s));
        // The furthest element reached (exclusive) and the odometer's overshoot must fit.
        let span = shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |acc, (&s, &st)| acc.checked_add(s.checked_mul(st)?));
        let (Some(numel), Some(_)) = (numel, span) else {
            return self.err(format!(
                "{WHAT}: size {shape:?} with stride {stride:?} overflows"
            ));
        };
        if numel > 0 {
            let last = shape
                .iter()
                .zip(&stride)
                .fold(offset, |acc, (&s, &st)| acc + (s - 1) * st);
            if last >= storage.numel {
                return self.err(format!(
                    "{WHAT}: a view (offset {offset}, size {shape:?}, stride {stride:?}) reaches \
                     element {last} of storage {} of {} elements",
                    storage.key, storage.numel
                ));
            }
            if numel > storage.numel {
                return self.err(format!(
                    "{WHAT}: a broadcast view of {numel} elements over storage {} of {} elements \
                     is not supported",
                    storage.key, storage.numel
                ));
            }
        }
        let tensor = TensorRef {
            storage_key: storage.key,
            storage_type: storage.storage_type,
            dtype: storage.dtype,
            storage_numel: storage.numel,
            offset,
            shape,
            stride,
        };
        self.new_obj(Node::Tensor(Box::new(tensor)), 1)
    }

    /// A tuple (`torch.Size`) or list of non-negative ints.
    fn counts(&self, id: Id, what: &str) -> Result<Vec<usize>, PickleError> {
        let (Node::Tuple(items) | Node::List(items)) = self.node(id) else {
            return self.err(format!(
                "torch._utils._rebuild_tensor_v2: {what} is a {}, not a tuple",
                self.kind(id)
            ));
        };
        items
            .iter()
            .map(|&v| self.int(v).and_then(|v| usize::try_from(v).ok()))
            .collect::<Option<Vec<_>>>()
            .map_or_else(
                || {
                    self.err(format!(
                        "torch._utils._rebuild_tensor_v2: {what} holds something other than \
                         non-negative integers"
                    ))
                },
                Ok,
            )
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::None => "None",
        Node::Bool(_) => "bool",
        Node::Int(_) | Node::BigInt => "int",
        Node::Float => "float",
        Node::Str(_) => "str",
        Node::Bytes => "bytes",
        Node::List(_) => "list",
        Node::Tuple(_) => "tuple",
        Node::Dict(_) => "dict",
        Node::Set => "set",
        Node::Global(_) => "global",
        Node::Storage(_) => "storage",
        Node::Tensor(_) => "tensor",
        Node::Opaque(_) => "object",
    }
}

/// Little-endian two's complement; `None` beyond 64 bits.
fn decode_long(bytes: &[u8]) -> Option<i64> {
    let Some(&last) = bytes.last() else {
        return Some(0);
    };
    let fill = if last & 0x80 != 0 { 0xff } else { 0x00 };
    let mut buf = [fill; 8];
    if bytes.len() > 8 {
        // Fits only if the extra bytes are sign extension of byte 7.
        let sign = if bytes[7] & 0x80 != 0 { 0xff } else { 0x00 };
        if bytes[8..].iter().any(|&b| b != sign) {
            return None;
        }
        buf.copy_from_slice(&bytes[..8]);
    } else {
        buf[..bytes.len()].copy_from_slice(bytes);
    }
    Some(i64::from_le_bytes(buf))
}

impl Pickle {
    fn node(&self, id: Id) -> &Node {
        &self.objects[id as usize].node
    }

    /// Values created, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.objects.len()
    }

    /// The tensors of the state dict: the top-level dict's `model` entry when that is a dict
    /// holding tensors (released checkpoints), else the top-level dict itself (a bare state
    /// dict). Entries that are not tensors are skipped.
    pub(crate) fn state_dict(&self) -> Result<BTreeMap<String, TensorRef>, PickleError> {
        let Node::Dict(top) = self.node(self.root) else {
            return Err(PickleError(format!(
                "the pickle holds a {}, not a dict",
                kind(self.node(self.root))
            )));
        };
        let model = top
            .iter()
            .rev()
            .find(|(k, _)| matches!(self.node(*k), Node::Str(s) if s == "model"));
        if let Some((_, model)) = model {
            if let Node::Dict(entries) = self.node(*model) {
                let tensors = self.tensors(entries)?;
                if !tensors.is_empty() {
                    return Ok(tensors);
                }
            }
        }
        self.tensors(top)
    }

    fn tensors(&self, entries: &[(Id, Id)]) -> Result<BTreeMap<String, TensorRef>, PickleError> {
        let mut out = BTreeMap::new();
        for &(k, v) in entries {
            let Node::Str(name) = self.node(k) else {
                continue;
            };
            match self.node(v) {
                Node::Tensor(t) => {
                    out.insert(name.clone(), (**t).clone());
                }
                Node::Opaque(callable) => {
                    if let Node::Global(g) = self.node(*callable) {
                        if g.0.starts_with("torch") && g.1.starts_with("_rebuild") {
                            return Err(PickleError(format!(
                                "{name}: unsupported kind of tensor ({}.{})",
                                g.0, g.1
                            )));
                        }
                    }
                    out.remove(name);
                }
                _ => {
                    // A later non-tensor value replaces an earlier tensor, as in Python.
                    out.remove(name);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-written pickles, protocol 2, the way torch.save writes them.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn new() -> Self {
            P(vec![op::PROTO, 2])
        }
        fn op(mut self, code: u8) -> Self {
            self.0.push(code);
            self
        }
        fn ops(mut self, codes: &[u8]) -> Self {
            self.0.extend_from_slice(codes);
            self
        }
        fn s(mut self, s: &str) -> Self {
            self.0.push(op::BINUNICODE);
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn int(mut self, v: i32) -> Self {
            self.0.push(op::BININT);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn global(mut self, module: &str, name: &str) -> Self {
            self.0.push(op::GLOBAL);
            self.0
                .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            self
        }
        fn put(mut self, key: u32) -> Self {
            self.0.push(op::LONG_BINPUT);
            self.0.extend_from_slice(&key.to_le_bytes());
            self
        }
        fn get(mut self, key: u32) -> Self {
            self.0.push(op::LONG_BINGET);
            self.0.extend_from_slice(&key.to_le_bytes());
            self
        }
        fn ints(mut self, v: &[i32]) -> Self {
            self = self.op(op::MARK);
            for &x in v {
                self = self.int(x);
            }
            self.op(op::TUPLE)
        }
        /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
        fn tensor(
            self,
            storage: &str,
            ty: &str,
            numel: i32,
            offset: i32,
            size: &[i32],
            stride: &[i32],
        ) -> Self {
            self.global("torch._utils", "_rebuild_tensor_v2")
                .op(op::MARK)
                .op(op::MARK)
                .s("storage")
                .global("torch", ty)
                .s(storage)
                .s("cpu")
                .int(numel)
                .op(op::TUPLE)
                .op(op::BINPERSID)
                .int(offset)
                .ints(size)
                .ints(stride)
                .op(op::NEWFALSE)
                .global("collections", "OrderedDict")
                .op(op::EMPTY_TUPLE)
                .op(op::REDUCE)
                .op(op::TUPLE)
                .op(op::REDUCE)
        }
        fn parse(&self) -> Result<Pickle, PickleError> {
            parse(&self.0, &Limits::default())
        }
    }

    fn err(p: &P) -> String {
        match p.parse() {
            Ok(_) => panic!("parsed"),
            Err(e) => e.0,
        }
    }

    /// `{'model': OrderedDict(w=..., b=...) with _metadata, 'optimizer': {...}, 'config': <opaque>}`.
    fn checkpoint() -> P {
        P::new()
            .op(op::EMPTY_DICT)
            .op(op::MARK)
            .s("model")
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::MARK)
            .s("w")
            .tensor("0", "FloatStorage", 6, 0, &[2, 3], &[3, 1])
            .s("b")
            .global("torch._utils", "_rebuild_parameter")
            .tensor("1", "HalfStorage", 4, 1, &[3], &[1])
            .op(op::NEWTRUE)
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::TUPLE3)
            .op(op::REDUCE)
            .s("steps")
            .tensor("2", "LongStorage", 1, 0, &[], &[])
            .op(op::SETITEMS)
            // state_dict._metadata
            .op(op::EMPTY_DICT)
            .s("_metadata")
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::SETITEM)
            .op(op::BUILD)
            .s("optimizer")
            .op(op::EMPTY_DICT)
            .s("state")
            .op(op::EMPTY_DICT)
            .op(op::SETITEM)
            .s("config")
            .global("omegaconf.dictconfig", "DictConfig")
            .op(op::EMPTY_TUPLE)
            .op(op::NEWOBJ)
            .op(op::EMPTY_DICT)
            .s("_content")
            .global("collections", "defaultdict")
            .global("__builtin__", "dict")
            .op(op::TUPLE1)
            .op(op::REDUCE)
            .s("k")
            .int(1)
            .op(op::SETITEM)
            .op(op::SETITEM)
            .op(op::BUILD)
            .s("epoch")
            .op(op::BININT1)
            .op(3)
            .op(op::SETITEMS)
            .op(op::STOP)
    }

    #[test]
    fn reads_a_checkpoint_and_skips_what_it_does_not_build() {
        let tensors = checkpoint().parse().unwrap().state_dict().unwrap();
        let keys: Vec<&str> = tensors.keys().map(String::as_str).collect();
        assert_eq!(keys, ["b", "steps", "w"]);
        let w = &tensors["w"];
        assert_eq!(
            (w.shape.clone(), w.dtype, w.storage_key.as_str()),
            (vec![2, 3], Some(Dtype::F32), "0")
        );
        let b = &tensors["b"];
        assert_eq!(
            (b.shape.clone(), b.offset, b.dtype),
            (vec![3], 1, Some(Dtype::F16))
        );
        assert_eq!(tensors["steps"].shape, Vec::<usize>::new());
        assert_eq!(tensors["steps"].numel(), 1);
    }

    #[test]
    fn a_bare_state_dict_is_accepted() {
        let p = P::new()
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .s("x")
            .tensor("0", "DoubleStorage", 2, 0, &[2], &[1])
            .op(op::SETITEM)
            .op(op::STOP);
        let tensors = p.parse().unwrap().state_dict().unwrap();
        assert_eq!(tensors["x"].dtype, Some(Dtype::F64));
    }

    #[test]
    fn reads_offsets_strides_and_dtypes() {
        let t = |dtype, offset, shape: &[usize], stride: &[usize], numel| TensorRef {
            storage_key: "0".into(),
            storage_type: "FloatStorage".into(),
            dtype: Some(dtype),
            storage_numel: numel,
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        };
        let f32s: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        // Contiguous with an offset.
        assert_eq!(
            t(Dtype::F32, 2, &[2, 2], &[2, 1], 12)
                .read_f32(&f32s)
                .unwrap(),
            [2.0, 3.0, 4.0, 5.0]
        );
        // A transpose of a 3x4 matrix: shape [4, 3], stride [1, 4].
        assert_eq!(
            t(Dtype::F32, 0, &[4, 3], &[1, 4], 12)
                .read_f32(&f32s)
                .unwrap(),
            [0.0, 4.0, 8.0, 1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0]
        );
        // Every other column, from offset 1.
        assert_eq!(
            t(Dtype::F32, 1, &[3, 2], &[4, 2], 12)
                .read_f32(&f32s)
                .unwrap(),
            [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]
        );
        // A scalar.
        assert_eq!(
            t(Dtype::F32, 7, &[], &[], 12).read_f32(&f32s).unwrap(),
            [7.0]
        );
        // Other dtypes.
        let h: Vec<u8> = [0x3c00u16, 0xc000, 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            t(Dtype::F16, 0, &[3], &[1], 3).read_f32(&h).unwrap(),
            [1.0, -2.0, 2f32.powi(-24)]
        );
        let bf: Vec<u8> = [0x3f80u16, 0xc040]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            t(Dtype::BF16, 0, &[2], &[1], 2).read_f32(&bf).unwrap(),
            [1.0, -3.0]
        );
        let d: Vec<u8> = [0.5f64, -1e300]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            t(Dtype::F64, 0, &[2], &[1], 2).read_f32(&d).unwrap(),
            [0.5, f32::NEG_INFINITY]
        );
        let l: Vec<u8> = [7i64, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            t(Dtype::I64, 0, &[2], &[1], 2).read_f32(&l).unwrap(),
            [7.0, -3.0]
        );
        assert_eq!(
            t(Dtype::Bool, 0, &[2], &[1], 2).read_f32(&[0, 5]).unwrap(),
            [0.0, 1.0]
        );
        // The storage entry must hold exactly what the pickle says.
        let e = t(Dtype::F32, 0, &[2], &[1], 3).read_f32(&f32s).unwrap_err();
        assert!(
            e.contains("holds 48 bytes") && e.contains("3 elements"),
            "{e}"
        );
        let mut odd = t(Dtype::F32, 0, &[2], &[1], 12);
        odd.dtype = None;
        odd.storage_type = "ComplexFloatStorage".into();
        assert!(odd
            .read_f32(&f32s)
            .unwrap_err()
            .contains("unsupported storage type ComplexFloatStorage"));
    }

    #[test]
    fn views_outside_their_storage_are_refused() {
        let view = |offset, size: &[i32], stride: &[i32]| {
            P::new()
                .op(op::EMPTY_DICT)
                .s("x")
                .tensor("0", "FloatStorage", 6, offset, size, stride)
                .op(op::SETITEM)
                .op(op::STOP)
        };
        assert!(view(0, &[2, 3], &[3, 1]).parse().is_ok());
        assert!(err(&view(1, &[2, 3], &[3, 1]))
            .contains("reaches element 6 of storage 0 of 6 elements"));
        assert!(err(&view(0, &[3, 3], &[1, 1])).contains("broadcast view of 9 elements"));
        assert!(err(&view(0, &[100, 100], &[0, 0])).contains("broadcast view of 10000 elements"));
        assert!(err(&view(0, &[2, 3], &[3])).contains("2 sizes but 1 strides"));
        let huge = view(0, &[1 << 30, 1 << 30, 1 << 30], &[1, 1, 1]);
        assert!(err(&huge).contains("overflows"), "{}", err(&huge));
        let e = err(&view(0, &[2], &[-1]));
        assert!(
            e.contains("stride holds something other than non-negative integers"),
            "{e}"
        );
        let e = err(&view(-1, &[2], &[1]));
        assert!(e.contains("storage offset is a int, not a count"), "{e}");
    }

    #[test]
    fn a_short_rebuild_argument_tuple_is_an_error() {
        // _rebuild_tensor_v2(storage, 0, (2,)): three of six arguments.
        let p = P::new()
            .op(op::EMPTY_DICT)
            .s("x")
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(op::MARK)
            .op(op::MARK)
            .s("storage")
            .global("torch", "FloatStorage")
            .s("0")
            .s("cpu")
            .int(2)
            .op(op::TUPLE)
            .op(op::BINPERSID)
            .int(0)
            .ints(&[2])
            .op(op::TUPLE)
            .op(op::REDUCE)
            .op(op::SETITEM)
            .op(op::STOP);
        let e = err(&p);
        assert!(
            e.contains("torch._utils._rebuild_tensor_v2 takes 6 or 7 arguments, got 3"),
            "{e}"
        );
        // An empty tuple, and _rebuild_parameter with one argument.
        let p = P::new()
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::STOP);
        assert!(err(&p).contains("got 0"));
        let p = P::new()
            .global("torch._utils", "_rebuild_parameter")
            .op(op::NONE)
            .op(op::TUPLE1)
            .op(op::REDUCE)
            .op(op::STOP);
        assert!(
            err(&p).contains("_rebuild_parameter takes 3 arguments, got 1"),
            "{}",
            err(&p)
        );
        // A short persistent id.
        let p = P::new()
            .s("storage")
            .op(op::TUPLE1)
            .op(op::BINPERSID)
            .op(op::STOP);
        assert!(err(&p).contains("persistent id of 1 values"));
        // Arguments that are not a tuple.
        let p = P::new()
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(op::NONE)
            .op(op::REDUCE)
            .op(op::STOP);
        assert!(err(&p).contains("REDUCE arguments are a None, not a tuple"));
        // Stack underflow instead of arguments.
        let p = P::new().op(op::REDUCE);
        assert!(err(&p).contains("stack underflow"));
    }

    #[test]
    fn memo_billion_laughs_shares_instead_of_copying() {
        // l0 = [None]*4; l(i+1) = [l(i), l(i), l(i), l(i)] 60 times: 4^60 elements if expanded.
        let mut p = P::new()
            .op(op::EMPTY_LIST)
            .put(0)
            .op(op::MARK)
            .ops(&[op::NONE; 4])
            .op(op::APPENDS);
        for i in 0..60 {
            p = p.op(op::EMPTY_LIST).put(i + 1).op(op::MARK);
            for _ in 0..4 {
                p = p.get(i);
            }
            p = p.op(op::APPENDS);
        }
        let p = p.op(op::STOP);
        let start = std::time::Instant::now();
        let parsed = p.parse().unwrap();
        assert!(parsed.len() < 100, "{} values", parsed.len());
        assert!(start.elapsed().as_secs() < 5);
        // It is not a state dict.
        assert_eq!(
            parsed.state_dict().unwrap_err().0,
            "the pickle holds a list, not a dict"
        );
    }

    #[test]
    fn memo_and_item_floods_hit_their_limits() {
        // Two million distinct memo slots.
        let mut p = P::new().op(op::NONE);
        for i in 0..2_000_000u32 {
            p = p.put(i);
        }
        let e = err(&p.op(op::STOP));
        assert!(e.contains("more than 1000000 memo entries (limit)"), "{e}");
        // DUP of one value into a list, 16.5 million times (one byte each).
        let mut bytes = P::new().op(op::EMPTY_LIST).0;
        for _ in 0..33 {
            bytes.push(op::MARK);
            bytes.push(op::NONE);
            bytes.extend(std::iter::repeat(op::DUP).take(499_999));
            bytes.push(op::APPENDS);
        }
        bytes.push(op::STOP);
        let e = parse(&bytes, &Limits::default()).unwrap_err().0;
        assert!(
            e.contains("more than 16000000 container entries (limit)"),
            "{e}"
        );
        // Too many values at all.
        let limits = Limits {
            max_objects: 1000,
            ..Limits::default()
        };
        let mut bytes = P::new().op(op::EMPTY_LIST).op(op::MARK).0;
        bytes.extend(std::iter::repeat(op::NONE).take(2000));
        let e = parse(&bytes, &limits).unwrap_err().0;
        assert!(e.contains("more than 1000 values (limit)"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        const DEEP: usize = 100_000;
        // MARK MARK MARK ...
        let bytes = P::new().ops(&[op::MARK; DEEP]).0;
        let e = parse(&bytes, &Limits::default()).unwrap_err().0;
        assert!(e.contains("MARKs nested deeper than 1000"), "{e}");
        // ((((()))))): TUPLE1 around TUPLE1 around ...
        let bytes = P::new()
            .op(op::EMPTY_TUPLE)
            .ops(&[op::TUPLE1; DEEP])
            .op(op::STOP)
            .0;
        let e = parse(&bytes, &Limits::default()).unwrap_err().0;
        assert!(e.contains("containers nested deeper than 1000"), "{e}");
        // [[[[...]]]] built bottom-up with APPEND.
        let bytes = P::new()
            .ops(&[op::EMPTY_LIST; DEEP])
            .ops(&[op::APPEND; DEEP - 1])
            .op(op::STOP)
            .0;
        let e = parse(&bytes, &Limits::default()).unwrap_err().0;
        assert!(e.contains("containers nested deeper than 1000"), "{e}");
        // A list of lists via the memo, top-down, which no depth count sees: harmless, since
        // nothing recurses over values and the arena is flat (dropping it recurses neither).
        let mut p = P::new().op(op::EMPTY_LIST).put(0);
        for i in 0..DEEP as u32 {
            p = p
                .get(i)
                .op(op::EMPTY_LIST)
                .put(i + 1)
                .op(op::APPEND)
                .op(op::POP);
        }
        let parsed = p.op(op::STOP).parse().unwrap();
        drop(parsed);
        // {k: {k: {k: ...}}} with SETITEM, bottom-up.
        let mut p = P::new();
        for _ in 0..DEEP {
            p = p.op(op::EMPTY_DICT).s("k");
        }
        p = p.op(op::NONE).ops(&[op::SETITEM; DEEP]);
        let e = err(&p.op(op::STOP));
        assert!(e.contains("containers nested deeper than 1000"), "{e}");
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // BINUNICODE8 claiming 4 GiB with three bytes behind it.
        let p = P::new()
            .op(op::BINUNICODE8)
            .ops(&(4u64 << 30).to_le_bytes())
            .ops(b"abc");
        let e = err(&p);
        assert!(
            e.contains("a string of 4294967296 bytes, but only 3 bytes are left"),
            "{e}"
        );
        let p = P::new().op(op::BINUNICODE8).ops(&u64::MAX.to_le_bytes());
        assert!(err(&p).contains("a string of 18446744073709551615 bytes"));
        let p = P::new().op(op::BINUNICODE).ops(&u32::MAX.to_le_bytes());
        assert!(err(&p).contains("only 0 bytes are left"));
        let p = P::new().op(op::BINBYTES8).ops(&(1u64 << 40).to_le_bytes());
        assert!(err(&p).contains("a bytes object of 1099511627776 bytes"));
        let p = P::new().op(op::LONG4).ops(&i32::MAX.to_le_bytes());
        assert!(err(&p).contains("an integer of 2147483647 bytes"));
        let p = P::new().op(op::FRAME).ops(&(1u64 << 50).to_le_bytes());
        assert!(err(&p).contains("a frame of"));
        // The string budget.
        let limits = Limits {
            max_text: 10,
            ..Limits::default()
        };
        let p = P::new().s("0123456").s("789abc");
        assert!(parse(&p.0, &limits)
            .unwrap_err()
            .0
            .contains("more than 10 bytes of strings"));
        // The input itself.
        let limits = Limits {
            max_input: 4,
            ..Limits::default()
        };
        assert!(parse(&checkpoint().0, &limits)
            .unwrap_err()
            .0
            .contains("larger than the 4 bytes allowed"));
    }

    #[test]
    fn truncated_and_damaged_pickles_are_errors() {
        let valid = checkpoint().0;
        for end in 0..valid.len() {
            let e = parse(&valid[..end], &Limits::default()).unwrap_err().0;
            assert!(e.starts_with("pickle byte"), "{e}");
        }
        assert!(parse(&valid[..valid.len() - 1], &Limits::default())
            .unwrap_err()
            .0
            .contains("ends without STOP"));
        // Random damage: any outcome but a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            if let Ok(p) = parse(&bytes, &Limits::default()) {
                let _ = p.state_dict();
            }
        }
        // Opcodes torch.save never writes.
        assert!(err(&P::new().op(b'I')).contains("unsupported pickle opcode INT"));
        assert!(err(&P::new().op(0xff)).contains("unknown pickle opcode 0xff"));
        assert!(err(&P::new().ops(&[op::PROTO, 9])).contains("protocol 9"));
        assert!(err(&P::new().get(7)).contains("memo entry 7 is not set"));
    }

    #[test]
    fn integers_and_globals() {
        assert_eq!(decode_long(&[]), Some(0));
        assert_eq!(decode_long(&[0xff]), Some(-1));
        assert_eq!(decode_long(&[0x00, 0x01]), Some(256));
        assert_eq!(decode_long(&[0xff; 12]), Some(-1));
        assert_eq!(decode_long(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None);
        assert_eq!(decode_long(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(1));
        // STACK_GLOBAL, MEMOIZE and LONG1 (protocol 4) for a tensor.
        let p = P::new()
            .op(op::EMPTY_DICT)
            .op(op::MEMOIZE)
            .s("x")
            .s("torch")
            .s("IntStorage")
            .op(op::STACK_GLOBAL)
            .op(op::MEMOIZE)
            .op(op::POP)
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(op::MARK)
            .op(op::MARK)
            .s("storage")
            .get(1)
            .s("k")
            .s("cpu")
            .op(op::LONG1)
            .ops(&[1, 3])
            .op(op::TUPLE)
            .op(op::BINPERSID)
            .op(op::LONG1)
            .ops(&[0])
            .ints(&[3])
            .ints(&[1])
            .op(op::NEWFALSE)
            .op(op::EMPTY_DICT)
            .op(op::NONE)
            .op(op::TUPLE)
            .op(op::REDUCE)
            .op(op::SETITEM)
            .op(op::STOP);
        let t = p.parse().unwrap().state_dict().unwrap();
        assert_eq!(
            (t["x"].dtype, t["x"].shape.clone()),
            (Some(Dtype::I32), vec![3])
        );
    }
}

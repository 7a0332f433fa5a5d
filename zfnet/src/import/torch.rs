//! Tensors out of files written by `torch.save`, without Python.
//!
//! Two container formats, both holding one pickle (protocol 2) of the saved object in which every
//! tensor is a call `_rebuild_tensor_v2(storage, offset, size, stride, …)` and every storage a
//! *persistent id* `('storage', FloatStorage, key, location, numel[, view])`:
//!
//! - **zip** (torch ≥ 1.6): `NAME/data.pkl` is the pickle, `NAME/data/KEY` each storage's raw
//!   little-endian bytes.
//! - **legacy** (before 1.6, e.g. pytorchcv's `zfnet-1727-d010ddca.pth`): five pickles back to
//!   back: the magic number `0x1950a86a20f9469cfc6c`, the protocol version 1001, a system-info
//!   dict (`little_endian`, type sizes), the object, then the sorted list of storage keys; after
//!   them, for each key in that order, its element count as a little-endian `u64` and its raw
//!   bytes.
//!
//! The pickles are parsed by candle's pickle machine (`candle_core::pickle::Stack`), which
//! builds a tree of objects without running anything. The saved object may be a state dict
//! (`{name: tensor}`, possibly under a `state_dict` / `model` key) or a whole `nn.Module`, whose
//! tensors sit in each module's `_parameters` / `_buffers` and whose children in `_modules`: the
//! walk below names them as `state_dict()` would (`features.stage1.unit1.conv.weight`).

use crate::{Error, Result};
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

/// The first pickle of a legacy file: protocol 2, `LONG1` of the 10 bytes of the magic number
/// `0x1950a86a20f9469cfc6c` (little-endian), `STOP`. Compared byte for byte: candle's `LONG1`
/// decodes only up to 8 bytes.
const LEGACY_MAGIC_PICKLE: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];
const LEGACY_PROTOCOL: i64 = 1001;

/// How a file stores its tensors, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    TorchZip,
    TorchLegacy,
    Safetensors,
    /// An ONNX model (protobuf `ModelProto`, whose first field is `ir_version`).
    Onnx,
}

impl Container {
    /// Guesses from the first bytes; `None` for anything else.
    pub fn sniff(head: &[u8]) -> Option<Container> {
        match head {
            [b'P', b'K', 3, 4, ..] => Some(Container::TorchZip),
            [0x80, 2..=5, ..] => Some(Container::TorchLegacy),
            // safetensors: u64 header length, then the JSON header
            [_, _, _, _, _, _, _, _, b'{', ..] => Some(Container::Safetensors),
            // field 1 (ir_version), a small varint
            [0x08, 1..=30, ..] => Some(Container::Onnx),
            _ => None,
        }
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Weights(format!("{}: {what}", path.display()))
}

fn unpickle<R: BufRead>(r: &mut R, path: &Path, what: &str) -> Result<Object> {
    let mut stack = Stack::empty();
    stack
        .read_loop(r)
        .and_then(|()| stack.finalize())
        .map_err(|e| {
            bad(
                path,
                format!("cannot read the {what} pickle ({e}); is the file whole?"),
            )
        })
}

/// Every `(state_dict name, tensor info)` in a saved object; `dir` prefixes storage paths.
fn tensors_of(obj: Object, dir: &Path) -> Vec<TensorInfo> {
    let mut out = Vec::new();
    walk(obj, "", dir, &mut out);
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn walk(obj: Object, prefix: &str, dir: &Path, out: &mut Vec<TensorInfo>) {
    match obj {
        // a module: its state is the BUILD argument
        Object::Build { args, .. } => walk_module(*args, prefix, dir, out),
        Object::Dict(entries) => {
            let is_module = entries.iter().any(
                |(k, _)| matches!(k, Object::Unicode(k) if k == "_parameters" || k == "_modules"),
            );
            if is_module {
                return walk_module(Object::Dict(entries), prefix, dir, out);
            }
            for (key, value) in entries {
                let Object::Unicode(key) = key else { continue };
                if key == "_metadata" {
                    continue;
                }
                // checkpoints often wrap the weights: {"state_dict": …} or {"model": …}
                let name = match key.as_str() {
                    "state_dict" | "model" | "net" if prefix.is_empty() => String::new(),
                    _ => join(prefix, &key),
                };
                leaf_or_walk(value, &name, dir, out);
            }
        }
        _ => {}
    }
}

fn walk_module(state: Object, prefix: &str, dir: &Path, out: &mut Vec<TensorInfo>) {
    let Object::Dict(entries) = state else { return };
    for (key, value) in entries {
        let Object::Unicode(key) = key else { continue };
        match (key.as_str(), value) {
            ("_parameters" | "_buffers", Object::Dict(tensors)) => {
                for (name, t) in tensors {
                    if let Object::Unicode(name) = name {
                        leaf_or_walk(t, &join(prefix, &name), dir, out);
                    }
                }
            }
            ("_modules", Object::Dict(children)) => {
                for (name, child) in children {
                    if let Object::Unicode(name) = name {
                        walk(child, &join(prefix, &name), dir, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn leaf_or_walk(value: Object, name: &str, dir: &Path, out: &mut Vec<TensorInfo>) {
    match value
        .clone()
        .into_tensor_info(Object::Unicode(name.into()), dir)
    {
        Ok(Some(info)) => out.push(info),
        _ => walk(value, name, dir, out),
    }
}

/// The tensor `info` describes, cut out of its storage (`storage`: the raw bytes).
fn materialise(info: &TensorInfo, storage: &[u8], path: &Path) -> Result<Tensor> {
    let size = info.dtype.size_in_bytes();
    let elements = storage.len() / size;
    let flat = Tensor::from_raw_buffer(
        &storage[..elements * size],
        info.dtype,
        &[elements],
        &Device::Cpu,
    )?
    .to_dtype(DType::F32)?
    .to_vec1::<f32>()?;
    let layout = &info.layout;
    let (dims, strides) = (layout.dims(), layout.stride());
    let offset = layout.start_offset() / size;
    let count: usize = dims.iter().product();
    // the last element any index reaches must lie inside the storage
    let reach = offset
        + dims
            .iter()
            .zip(strides)
            .map(|(&d, &s)| d.saturating_sub(1) * s)
            .sum::<usize>();
    if count > 0 && reach >= flat.len() {
        return Err(bad(
            path,
            format!(
                "tensor {} {dims:?} reaches element {reach} of a storage of {}: the file is cut short or damaged",
                info.name,
                flat.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(count);
    let mut index = vec![0usize; dims.len()];
    for _ in 0..count {
        let at = offset + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        data.push(flat[at]);
        for d in (0..dims.len()).rev() {
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(Tensor::from_vec(data, dims, &Device::Cpu)?)
}

/// The entries of a zip that `torch.save` wrote, found through its central directory: torch
/// stores every entry uncompressed (sizes in data descriptors after the data, so the local
/// headers alone do not say where an entry ends) and writes zip64 end records. `None` when the
/// archive is not like that (compressed entries, no end record): the zip crate reads those.
/// This also keeps valid torch files readable that the zip crate 9 refuses ("Invalid Central
/// Directory header", seen on a torch file whose archive name is 21 characters long).
fn stored_entries(
    bytes: &[u8],
) -> Option<std::collections::HashMap<String, std::ops::Range<usize>>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let to_usize = |v: u64| usize::try_from(v).ok();
    // the end of central directory record: 22 bytes plus a comment of at most 64 KiB
    let lowest = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..bytes.len().saturating_sub(21)).rev().find(|&at| {
        u32_at(at) == Some(0x0605_4b50)
            && at + 22 + u16_at(at + 20).unwrap_or(0) as usize == bytes.len()
    })?;
    let (mut count, mut cd) = (u16_at(eocd + 10)? as u64, u32_at(eocd + 16)? as u64);
    // zip64: the locator just before points at the zip64 end record
    if eocd >= 20 && u32_at(eocd - 20) == Some(0x0706_4b50) {
        let record = to_usize(u64_at(eocd - 20 + 8)?)?;
        if u32_at(record) != Some(0x0606_4b50) {
            return None;
        }
        count = u64_at(record + 32)?;
        cd = u64_at(record + 48)?;
    }
    let mut entries = std::collections::HashMap::new();
    let mut at = to_usize(cd)?;
    for _ in 0..count {
        if u32_at(at)? != 0x0201_4b50 || u16_at(at + 10)? != 0 {
            return None; // not a central directory entry, or compressed
        }
        let (mut size, mut local) = (u32_at(at + 20)? as u64, u32_at(at + 42)? as u64);
        let (name_len, extra_len, comment_len) = (
            u16_at(at + 28)? as usize,
            u16_at(at + 30)? as usize,
            u16_at(at + 32)? as usize,
        );
        let name = std::str::from_utf8(bytes.get(at + 46..at + 46 + name_len)?).ok()?;
        // zip64 extra field: the 64-bit values of the fields that are 0xFFFFFFFF, in order
        let mut e = at + 46 + name_len;
        let extra_end = e + extra_len;
        while e + 4 <= extra_end {
            let (id, len) = (u16_at(e)?, u16_at(e + 2)? as usize);
            if id == 1 {
                let mut v = e + 4;
                if u32_at(at + 24)? == u32::MAX {
                    v += 8; // uncompressed size
                }
                if size == u32::MAX as u64 {
                    size = u64_at(v)?;
                    v += 8;
                }
                if local == u32::MAX as u64 {
                    local = u64_at(v)?;
                }
            }
            e += 4 + len;
        }
        let local = to_usize(local)?;
        if u32_at(local)? != 0x0403_4b50 {
            return None;
        }
        let data = local + 30 + u16_at(local + 26)? as usize + u16_at(local + 28)? as usize;
        let end = data.checked_add(to_usize(size)?)?;
        if end > bytes.len() {
            return None;
        }
        entries.insert(name.to_string(), data..end);
        at = extra_end + comment_len;
    }
    Some(entries)
}

/// Where the entries of a zip-format file come from.
enum Entries {
    Walked(
        Vec<u8>,
        std::collections::HashMap<String, std::ops::Range<usize>>,
    ),
    Zip(Box<zip::ZipArchive<BufReader<std::fs::File>>>),
}

impl Entries {
    fn open(path: &Path) -> Result<Entries> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        if let Some(found) = stored_entries(&bytes).filter(|e| !e.is_empty()) {
            return Ok(Entries::Walked(bytes, found));
        }
        drop(bytes);
        let file = std::fs::File::open(path).map_err(io)?;
        let zip = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| bad(path, format!("not a readable zip archive ({e})")))?;
        Ok(Entries::Zip(Box::new(zip)))
    }

    fn names(&mut self) -> Vec<String> {
        match self {
            Entries::Walked(_, e) => e.keys().cloned().collect(),
            Entries::Zip(zip) => (0..zip.len())
                .filter_map(|i| {
                    zip.name_for_index(i)
                        .and_then(|n| n.ok())
                        .map(|n| n.to_string())
                })
                .collect(),
        }
    }

    fn read(&mut self, name: &str) -> std::result::Result<Vec<u8>, String> {
        match self {
            Entries::Walked(bytes, e) => e
                .get(name)
                .map(|r| bytes[r.clone()].to_vec())
                .ok_or_else(|| "not in the archive".to_string()),
            Entries::Zip(zip) => {
                let mut out = Vec::new();
                zip.by_name(name)
                    .map_err(|e| e.to_string())?
                    .read_to_end(&mut out)
                    .map_err(|e| e.to_string())?;
                Ok(out)
            }
        }
    }
}

/// All tensors of a zip-format file, as `f32`, in the order the pickle lists them.
pub fn read_zip(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut entries = Entries::open(path)?;
    let pickle = entries
        .names()
        .into_iter()
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or_else(|| bad(path, "a zip file without data.pkl is not a torch.save file"))?;
    let dir = Path::new(pickle.trim_end_matches("data.pkl")).join("data");
    let pickled = entries
        .read(&pickle)
        .map_err(|e| bad(path, format!("{pickle}: {e}")))?;
    let obj = unpickle(&mut std::io::Cursor::new(pickled), path, "object")?;
    let mut out = Vec::new();
    for info in tensors_of(obj, &dir) {
        let bytes = entries.read(&info.path).map_err(|e| {
            bad(
                path,
                format!("storage {} of tensor {}: {e}", info.path, info.name),
            )
        })?;
        out.push((info.name.clone(), materialise(&info, &bytes, path)?));
    }
    Ok(out)
}

/// All tensors of a legacy-format file, as `f32`, in the order the pickle lists them.
pub fn read_legacy(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut r = BufReader::new(file);
    let mut magic = [0u8; LEGACY_MAGIC_PICKLE.len()];
    if r.read_exact(&mut magic).is_err() || magic != LEGACY_MAGIC_PICKLE {
        return Err(bad(path, "not a torch.save file (wrong magic number)"));
    }
    match unpickle(&mut r, path, "protocol version")? {
        Object::Int(v) if v as i64 == LEGACY_PROTOCOL => {}
        other => {
            return Err(bad(
                path,
                format!("unsupported torch.save protocol {other:?} (1001 expected)"),
            ))
        }
    }
    if let Object::Dict(info) = unpickle(&mut r, path, "system info")? {
        let big_endian = info.iter().any(|(k, v)| {
            matches!((k, v), (Object::Unicode(k), Object::Bool(false)) if k == "little_endian")
        });
        if big_endian {
            return Err(bad(path, "written on a big-endian machine: not supported"));
        }
    }
    let obj = unpickle(&mut r, path, "object")?;
    let keys: Vec<String> = match unpickle(&mut r, path, "storage keys")? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|_| bad(path, "a storage key is not a string"))
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad(path, "the storage key list is missing")),
    };
    let infos = tensors_of(obj, Path::new(""));
    // each storage: u64 element count, then its bytes, in key order
    let limit = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as usize;
    let mut storages = std::collections::HashMap::new();
    for key in &keys {
        let elem = infos
            .iter()
            .find(|i| i.path.trim_start_matches('/') == key)
            .map_or(4, |i| i.dtype.size_in_bytes());
        let mut n = [0u8; 8];
        r.read_exact(&mut n)
            .map_err(|_| bad(path, format!("the file ends before storage {key}")))?;
        let bytes = u64::from_le_bytes(n) as usize * elem;
        let here = r.stream_position().unwrap_or(0) as usize;
        if here + bytes > limit {
            return Err(bad(
                path,
                format!(
                    "storage {key} needs {bytes} bytes, the file has {} left: it is cut short",
                    limit.saturating_sub(here)
                ),
            ));
        }
        let mut data = vec![0u8; bytes];
        r.read_exact(&mut data)
            .map_err(|_| bad(path, format!("the file ends inside storage {key}")))?;
        storages.insert(key.clone(), data);
    }
    infos
        .iter()
        .map(|info| {
            let key = info.path.trim_start_matches('/');
            let storage = storages.get(key).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "tensor {} uses storage {key}, which the file lacks",
                        info.name
                    ),
                )
            })?;
            Ok((info.name.clone(), materialise(info, storage, path)?))
        })
        .collect()
}

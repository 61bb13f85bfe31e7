//! Model blob reading and writing (`firmware/FORMAT.md`). Every malformed input is an error
//! value; nothing here can panic.

use crate::layer::{Kind, Layer};

/// Format magic.
pub const MAGIC: [u8; 4] = *b"ODTM";
/// Format version this crate reads and writes.
pub const VERSION: u16 = 1;
/// Header bytes before the layer descriptors.
pub const HEADER_BYTES: usize = 40;
/// Bytes per layer descriptor.
pub const DESC_BYTES: usize = 24;
/// Largest number of layers a blob may describe.
pub const MAX_LAYERS: usize = 32;

/// Why a blob was rejected (FORMAT.md, "Validation").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// Shorter than its header or its declared length, or a section overruns it.
    Truncated,
    /// Not a model blob.
    BadMagic,
    /// A format version this firmware does not read.
    UnsupportedVersion,
    /// CRC-32 mismatch: corrupted in transit or in flash.
    BadCrc,
    /// The blob's architecture differs from the compiled model (layer index, 255 = header).
    ArchMismatch {
        /// Offending layer, or 255 for the header.
        layer: u8,
    },
    /// A quantization parameter is outside its allowed range.
    BadQuant {
        /// Offending layer.
        layer: u8,
    },
    /// Bytes after the declared end.
    TrailingBytes,
    /// The output buffer is too small to save the model.
    BufferTooSmall,
    /// A layer kind the model type cannot run (e.g. a convolution in a blob loaded into an
    /// MLP whose shape comes from the blob, [`crate::dyn_mlp::DynMlp`]).
    UnsupportedLayer {
        /// Offending layer.
        layer: u8,
        /// Its kind byte (FORMAT.md numbering).
        kind: u8,
    },
    /// A well-formed blob larger than the model type's compile-time capacity
    /// ([`crate::dyn_mlp::DynMlp`]).
    OverCapacity {
        /// Which limit.
        limit: Limit,
        /// The blob's value.
        got: u32,
        /// The capacity.
        max: u32,
    },
}

/// The capacity limits of a model whose shape comes from the blob
/// ([`BlobError::OverCapacity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Input features (`input_len`).
    Inputs,
    /// Units of a hidden layer.
    Width,
    /// Classes (`output_len`).
    Classes,
    /// Dense layers.
    Depth,
    /// Weights of all layers together.
    Weights,
}

impl Limit {
    /// What the limit counts, as written in error messages ("300 inputs > capacity 256").
    pub const fn noun(self) -> &'static str {
        match self {
            Limit::Inputs => "inputs",
            Limit::Width => "units in a hidden layer",
            Limit::Classes => "classes",
            Limit::Depth => "Dense layers",
            Limit::Weights => "weights",
        }
    }
}

/// Name of a layer kind byte (FORMAT.md), `"unknown"` for other values.
pub const fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "Dense",
        2 => "Conv1d",
        3 => "Conv2d",
        4 => "MaxPool2d",
        5 => "AvgPool2d",
        6 => "ReLU",
        7 => "Flatten",
        _ => "unknown",
    }
}

impl core::fmt::Display for BlobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BlobError::Truncated => f.write_str("truncated (shorter than its header or total_len)"),
            BlobError::BadMagic => f.write_str("bad magic (not an ODTM model blob)"),
            BlobError::UnsupportedVersion => f.write_str("unsupported format version"),
            BlobError::BadCrc => f.write_str("CRC mismatch (corrupted)"),
            BlobError::ArchMismatch { layer: 255 } => {
                f.write_str("architecture mismatch in the header")
            }
            BlobError::ArchMismatch { layer } => {
                write!(f, "architecture mismatch at layer {layer}")
            }
            BlobError::BadQuant { layer: 255 } => f.write_str("bad quantization: softmax_a <= 0"),
            BlobError::BadQuant { layer } => {
                write!(f, "bad quantization parameter at layer {layer}")
            }
            BlobError::TrailingBytes => f.write_str("trailing bytes"),
            BlobError::BufferTooSmall => f.write_str("buffer too small"),
            BlobError::UnsupportedLayer { layer, kind } => write!(
                f,
                "layer {layer} is {} (kind {kind}); this firmware runs MLPs only \
                 (Dense layers, fused ReLU)",
                kind_name(kind)
            ),
            BlobError::OverCapacity { limit, got, max } => {
                write!(f, "{got} {} > capacity {max}", limit.noun())
            }
        }
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Incremental CRC-32 (IEEE 802.3, same as zlib's `crc32`).
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

impl Crc32 {
    /// Start a checksum.
    pub const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }
    /// The checksum of everything fed so far.
    pub fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

/// Little-endian cursor over a blob; reads past `end` give `Truncated`.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf[..end]` starting at `pos`.
    pub fn new(buf: &'a [u8], pos: usize, end: usize) -> Self {
        Self {
            buf,
            pos,
            end: end.min(buf.len()),
        }
    }
    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BlobError> {
        let end = self.pos.checked_add(N).ok_or(BlobError::Truncated)?;
        if end > self.end {
            return Err(BlobError::Truncated);
        }
        let mut out = [0u8; N];
        out.copy_from_slice(self.buf.get(self.pos..end).ok_or(BlobError::Truncated)?);
        self.pos = end;
        Ok(out)
    }
    /// Read a `u8`.
    pub fn u8(&mut self) -> Result<u8, BlobError> {
        Ok(self.take::<1>()?[0])
    }
    /// Read an `i8`.
    pub fn i8(&mut self) -> Result<i8, BlobError> {
        Ok(self.take::<1>()?[0] as i8)
    }
    /// Read a `u16`.
    pub fn u16(&mut self) -> Result<u16, BlobError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    /// Read an `i16`.
    pub fn i16(&mut self) -> Result<i16, BlobError> {
        Ok(i16::from_le_bytes(self.take()?))
    }
    /// Read a `u32`.
    pub fn u32(&mut self) -> Result<u32, BlobError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    /// Read an `i32`.
    pub fn i32(&mut self) -> Result<i32, BlobError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    /// Read 4 raw bytes.
    pub fn bytes4(&mut self) -> Result<[u8; 4], BlobError> {
        self.take()
    }
    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), BlobError> {
        let end = self.pos.checked_add(n).ok_or(BlobError::Truncated)?;
        if end > self.end {
            return Err(BlobError::Truncated);
        }
        self.pos = end;
        Ok(())
    }
    /// Skip padding to the next multiple of 4.
    pub fn align4(&mut self) -> Result<(), BlobError> {
        self.skip((4 - self.pos % 4) % 4)
    }
}

/// Little-endian writer into a caller's buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes written so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Append raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), BlobError> {
        let end = self
            .pos
            .checked_add(b.len())
            .ok_or(BlobError::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(BlobError::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
    /// Append a `u8`.
    pub fn u8(&mut self, v: u8) -> Result<(), BlobError> {
        self.bytes(&[v])
    }
    /// Append an `i8`.
    pub fn i8(&mut self, v: i8) -> Result<(), BlobError> {
        self.bytes(&[v as u8])
    }
    /// Append a `u16`.
    pub fn u16(&mut self, v: u16) -> Result<(), BlobError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Append an `i16`.
    pub fn i16(&mut self, v: i16) -> Result<(), BlobError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Append a `u32`.
    pub fn u32(&mut self, v: u32) -> Result<(), BlobError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Append an `i32`.
    pub fn i32(&mut self, v: i32) -> Result<(), BlobError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Zero padding to the next multiple of 4.
    pub fn align4(&mut self) -> Result<(), BlobError> {
        while !self.pos.is_multiple_of(4) {
            self.u8(0)?;
        }
        Ok(())
    }
    /// Overwrite a `u32` at `at`.
    pub fn patch_u32(&mut self, at: usize, v: u32) -> Result<(), BlobError> {
        self.buf
            .get_mut(at..at + 4)
            .ok_or(BlobError::BufferTooSmall)?
            .copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    /// The written bytes.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or(&[])
    }
}

/// Model-level fields of the blob header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelMeta {
    /// Converter-chosen model identifier.
    pub model_id: u32,
    /// Input zero point.
    pub input_zp: i8,
    /// Logit zero point.
    pub output_zp: i8,
    /// Input scale, f32 bits (host metadata, never computed with here).
    pub input_scale: [u8; 4],
    /// Output scale, f32 bits (host metadata).
    pub output_scale: [u8; 4],
    /// `round(s_y · log2(e) · 2^16)`.
    pub softmax_a: i32,
}

/// A raw descriptor as stored.
struct RawDesc {
    kind: u8,
    flags: u8,
    dims: [u16; 10],
}

fn desc_at(blob: &[u8], i: usize) -> Result<RawDesc, BlobError> {
    let at = HEADER_BYTES + DESC_BYTES * i;
    let mut r = Reader::new(blob, at, at + DESC_BYTES);
    let kind = r.u8()?;
    let flags = r.u8()?;
    let _reserved = r.u16()?;
    let mut dims = [0u16; 10];
    for d in dims.iter_mut() {
        *d = r.u16()?;
    }
    Ok(RawDesc { kind, flags, dims })
}

/// Parameter-section bytes a descriptor implies (FORMAT.md), 0 for parameterless kinds.
/// Computed in `u64` and saturated: u16 dimensions multiply past `usize` on 32-bit targets.
fn section_len(d: &RawDesc) -> usize {
    let v = |i: usize| d.dims[i] as u64;
    let (out, fan) = match d.kind {
        1 => (v(1), v(0)),
        2 => (v(2), v(3) * v(1)),
        3 => (v(3), v(4) * v(5) * v(2)),
        _ => return 0,
    };
    let n = (4 + out * 16 + out * fan + 3) & !3;
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn kind_from(b: u8) -> Option<Kind> {
    Some(match b {
        1 => Kind::Dense,
        2 => Kind::Conv1d,
        3 => Kind::Conv2d,
        4 => Kind::MaxPool2d,
        5 => Kind::AvgPool2d,
        6 => Kind::Relu,
        7 => Kind::Flatten,
        _ => return None,
    })
}

/// Validate `blob` against `layers` (shapes, sizes, quantization ranges) and, unless `dry`,
/// load it. Callers run a dry pass first so a bad blob leaves the model untouched.
pub fn load(
    layers: &mut [&mut dyn Layer],
    blob: &[u8],
    input_len: usize,
    output_len: usize,
    dry: bool,
) -> Result<ModelMeta, BlobError> {
    let Envelope {
        n_layers,
        input_len: in_len,
        output_len: out_len,
        total,
        meta,
    } = check_envelope(blob)?;
    let end = total.saturating_sub(4);
    if n_layers != layers.len() || in_len != input_len || out_len != output_len {
        return Err(BlobError::ArchMismatch { layer: 255 });
    }
    for (i, l) in layers.iter().enumerate() {
        let d = desc_at(blob, i)?;
        let want = l.desc();
        let ok = kind_from(d.kind) == Some(want.kind)
            && d.flags == want.relu as u8
            && d.dims == want.dims;
        if !ok {
            return Err(BlobError::ArchMismatch { layer: i as u8 });
        }
    }
    if meta.softmax_a <= 0 {
        return Err(BlobError::BadQuant { layer: 255 });
    }
    let mut r = Reader::new(blob, HEADER_BYTES + DESC_BYTES * n_layers, end);
    for (i, l) in layers.iter_mut().enumerate() {
        l.read_params(&mut r, i as u8, dry)?;
    }
    if r.pos() != end || blob.len() > total {
        return Err(BlobError::TrailingBytes);
    }
    Ok(meta)
}

/// Header fields of a blob that passed the checks every loader runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Number of layer descriptors.
    pub n_layers: usize,
    /// `input_len` of the header.
    pub input_len: usize,
    /// `output_len` of the header.
    pub output_len: usize,
    /// `total_len` (CRC included); the blob is at least this long.
    pub total: usize,
    /// The model-level header fields.
    pub meta: ModelMeta,
}

/// The checks of FORMAT.md that come before the architecture: `Truncated` (lengths, the
/// descriptor table and every section its own descriptors imply), `BadMagic`,
/// `UnsupportedVersion`, `BadCrc`, in that order. Returns the header fields.
pub fn check_envelope(blob: &[u8]) -> Result<Envelope, BlobError> {
    if blob.len() < HEADER_BYTES + 4 {
        return Err(BlobError::Truncated);
    }
    let mut r = Reader::new(blob, 0, blob.len());
    let magic = r.bytes4()?;
    let version = r.u16()?;
    let n_layers = r.u16()? as usize;
    let model_id = r.u32()?;
    let in_len = r.u32()? as usize;
    let out_len = r.u32()? as usize;
    let input_zp = r.i8()?;
    let output_zp = r.i8()?;
    let _reserved = r.u16()?;
    let input_scale = r.bytes4()?;
    let output_scale = r.bytes4()?;
    let softmax_a = r.i32()?;
    let total = r.u32()? as usize;
    if total < HEADER_BYTES + 4 || blob.len() < total {
        return Err(BlobError::Truncated);
    }
    let end = total - 4;
    // Section extents from the blob's own descriptors: an overrun is `Truncated` (checked first).
    let mut pos = DESC_BYTES
        .checked_mul(n_layers)
        .and_then(|d| d.checked_add(HEADER_BYTES))
        .ok_or(BlobError::Truncated)?;
    if pos > end {
        return Err(BlobError::Truncated);
    }
    for i in 0..n_layers {
        let d = desc_at(blob, i)?;
        pos = pos.saturating_add(section_len(&d));
        if pos > end {
            return Err(BlobError::Truncated);
        }
    }
    if magic != MAGIC {
        return Err(BlobError::BadMagic);
    }
    if version != VERSION {
        return Err(BlobError::UnsupportedVersion);
    }
    let body = blob.get(..end).ok_or(BlobError::Truncated)?;
    let stored = blob.get(end..total).ok_or(BlobError::Truncated)?;
    if crc32(body) != u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]) {
        return Err(BlobError::BadCrc);
    }
    Ok(Envelope {
        n_layers,
        input_len: in_len,
        output_len: out_len,
        total,
        meta: ModelMeta {
            model_id,
            input_zp,
            output_zp,
            input_scale,
            output_scale,
            softmax_a,
        },
    })
}

/// Descriptor `i` of a blob as stored: `(kind, flags, dims)`.
pub fn raw_desc(blob: &[u8], i: usize) -> Result<(u8, u8, [u16; 10]), BlobError> {
    let d = desc_at(blob, i)?;
    Ok((d.kind, d.flags, d.dims))
}

/// Write the model as a blob into `out`; returns the length.
pub fn save(
    layers: &[&dyn Layer],
    meta: &ModelMeta,
    input_len: usize,
    output_len: usize,
    out: &mut [u8],
) -> Result<usize, BlobError> {
    let mut w = Writer::new(out);
    w.bytes(&MAGIC)?;
    w.u16(VERSION)?;
    w.u16(layers.len() as u16)?;
    w.u32(meta.model_id)?;
    w.u32(input_len as u32)?;
    w.u32(output_len as u32)?;
    w.i8(meta.input_zp)?;
    w.i8(meta.output_zp)?;
    w.u16(0)?;
    w.bytes(&meta.input_scale)?;
    w.bytes(&meta.output_scale)?;
    w.i32(meta.softmax_a)?;
    w.u32(0)?; // total_len, patched below
    for l in layers {
        let d = l.desc();
        w.u8(d.kind as u8)?;
        w.u8(d.relu as u8)?;
        w.u16(0)?;
        for v in d.dims {
            w.u16(v)?;
        }
    }
    for l in layers {
        l.write_params(&mut w)?;
    }
    let total = w.pos() + 4;
    w.patch_u32(36, total as u32)?;
    let crc = crc32(w.written());
    w.u32(crc)?;
    Ok(total)
}

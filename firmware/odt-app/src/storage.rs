//! Model storage in flash (`docs/protocol.md` §4): two save slots with a generation counter and
//! a CRC, the read-only pretrained region and the boot-count record.
//!
//! Slot layout: `magic "ODTS" | generation u32 | len u32 | crc32(blob) u32 | blob`. A save erases
//! the slot that does **not** hold the newest valid copy, writes the blob, then the 16-byte header
//! (the commit), then reads the slot back. A power loss at any point leaves the other slot — the
//! last good model — untouched, and the half-written slot fails its magic or CRC check.

use odt_core::blob::Crc32;

use crate::hal::{Flash, Region, WRITE_ALIGN};

/// Slot magic.
pub const SLOT_MAGIC: [u8; 4] = *b"ODTS";
/// Slot header bytes before the blob.
pub const SLOT_HEADER: usize = 16;
/// Boot-record magic.
pub const BOOT_MAGIC: [u8; 4] = *b"ODTB";
/// Boot-record bytes: `magic "ODTB" | count u32 | crc32(magic, count) u32`.
pub const BOOT_RECORD_LEN: usize = 12;
/// Offset of `total_len` in a model blob header (FORMAT.md).
const BLOB_TOTAL_LEN_AT: usize = 36;
/// Smallest model blob (FORMAT.md header + CRC).
const BLOB_MIN_LEN: usize = 44;

/// Why a storage operation failed; [`detail`](StorageError::detail) is the `ERROR(FLASH)` detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// Erasing failed (detail 1).
    Erase,
    /// Programming failed (detail 2).
    Write,
    /// Reading failed (detail 3).
    Read,
    /// The slot read back differs from what was written (detail 4).
    Verify,
    /// No valid saved model (detail 5).
    NothingSaved,
    /// The blob does not fit the region or the buffer (detail 6).
    TooSmall,
}

impl StorageError {
    /// The `detail` of `ERROR(FLASH)`.
    pub const fn detail(self) -> u16 {
        match self {
            StorageError::Erase => 1,
            StorageError::Write => 2,
            StorageError::Read => 3,
            StorageError::Verify => 4,
            StorageError::NothingSaved => 5,
            StorageError::TooSmall => 6,
        }
    }
}

/// Header of a valid slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// Which slot.
    pub region: Region,
    /// Save generation (higher is newer, compared with wrap-around).
    pub generation: u32,
    /// Blob length.
    pub len: u32,
    /// CRC-32 of the blob.
    pub crc: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

/// Whether generation `a` is newer than `b` (serial-number arithmetic, so the counter may wrap).
pub const fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// CRC-32 of `len` bytes of `region` from `offset`, read in small pieces (no buffer needed).
fn crc_of<F: Flash>(
    flash: &mut F,
    region: Region,
    offset: u32,
    len: u32,
) -> Result<u32, StorageError> {
    let mut c = Crc32::new();
    let mut chunk = [0u8; 64];
    let mut done = 0u32;
    while done < len {
        let n = (len - done).min(chunk.len() as u32) as usize;
        let piece = chunk.get_mut(..n).ok_or(StorageError::Read)?;
        flash
            .read(region, offset + done, piece)
            .map_err(|_| StorageError::Read)?;
        c.update(piece);
        done += n as u32;
    }
    Ok(c.finish())
}

/// The slot's header if the slot holds a complete, CRC-valid blob.
pub fn slot_info<F: Flash>(
    flash: &mut F,
    region: Region,
) -> Result<Option<SlotInfo>, StorageError> {
    let cap = flash.region_len(region) as usize;
    if cap < SLOT_HEADER + BLOB_MIN_LEN {
        return Ok(None);
    }
    let mut h = [0u8; SLOT_HEADER];
    flash
        .read(region, 0, &mut h)
        .map_err(|_| StorageError::Read)?;
    if h.get(..4) != Some(&SLOT_MAGIC[..]) {
        return Ok(None);
    }
    let info = SlotInfo {
        region,
        generation: le32(&h, 4),
        len: le32(&h, 8),
        crc: le32(&h, 12),
    };
    if (info.len as usize) < BLOB_MIN_LEN || info.len as usize > cap - SLOT_HEADER {
        return Ok(None);
    }
    let crc = crc_of(flash, region, SLOT_HEADER as u32, info.len)?;
    Ok((crc == info.crc).then_some(info))
}

/// The valid slots, newest first.
pub fn valid_slots<F: Flash>(flash: &mut F) -> Result<[Option<SlotInfo>; 2], StorageError> {
    let a = slot_info(flash, Region::Slot0)?;
    let b = slot_info(flash, Region::Slot1)?;
    Ok(match (a, b) {
        (Some(x), Some(y)) if newer(y.generation, x.generation) => [Some(y), Some(x)],
        (Some(x), y) => [Some(x), y],
        (None, y) => [y, None],
    })
}

/// Read a valid slot's blob into `buf`; returns the blob.
pub fn read_slot<'b, F: Flash>(
    flash: &mut F,
    info: &SlotInfo,
    buf: &'b mut [u8],
) -> Result<&'b [u8], StorageError> {
    let blob = buf
        .get_mut(..info.len as usize)
        .ok_or(StorageError::TooSmall)?;
    flash
        .read(info.region, SLOT_HEADER as u32, blob)
        .map_err(|_| StorageError::Read)?;
    // The slot could have changed since it was checked (it cannot here, but a read glitch can).
    let mut c = Crc32::new();
    c.update(blob);
    if c.finish() != info.crc {
        return Err(StorageError::Read);
    }
    Ok(blob)
}

/// Write `data` at `offset` of an erased region, padding the last word with `0xFF`.
fn write_padded<F: Flash>(
    flash: &mut F,
    region: Region,
    offset: u32,
    data: &[u8],
) -> Result<(), StorageError> {
    let whole = data.len() - data.len() % WRITE_ALIGN;
    let (head, tail) = data.split_at(whole);
    if !head.is_empty() {
        flash
            .write(region, offset, head)
            .map_err(|_| StorageError::Write)?;
    }
    if !tail.is_empty() {
        let mut last = [0xFFu8; WRITE_ALIGN];
        last.get_mut(..tail.len())
            .ok_or(StorageError::Write)?
            .copy_from_slice(tail);
        flash
            .write(region, offset + whole as u32, &last)
            .map_err(|_| StorageError::Write)?;
    }
    Ok(())
}

/// Save `blob` into the slot that does not hold the newest valid copy, one generation newer.
/// Returns the slot written.
pub fn save<F: Flash>(flash: &mut F, blob: &[u8]) -> Result<SlotInfo, StorageError> {
    let [newest, _] = valid_slots(flash)?;
    let (region, generation) = match newest {
        Some(n) if n.region == Region::Slot0 => (Region::Slot1, n.generation.wrapping_add(1)),
        Some(n) => (Region::Slot0, n.generation.wrapping_add(1)),
        None => (Region::Slot0, 1),
    };
    if blob.len() < BLOB_MIN_LEN || SLOT_HEADER + blob.len() > flash.region_len(region) as usize {
        return Err(StorageError::TooSmall);
    }
    let mut c = Crc32::new();
    c.update(blob);
    let info = SlotInfo {
        region,
        generation,
        len: blob.len() as u32,
        crc: c.finish(),
    };
    flash.erase(region).map_err(|_| StorageError::Erase)?;
    write_padded(flash, region, SLOT_HEADER as u32, blob)?;
    let mut h = [0u8; SLOT_HEADER];
    h[..4].copy_from_slice(&SLOT_MAGIC);
    h[4..8].copy_from_slice(&info.generation.to_le_bytes());
    h[8..12].copy_from_slice(&info.len.to_le_bytes());
    h[12..16].copy_from_slice(&info.crc.to_le_bytes());
    flash
        .write(region, 0, &h)
        .map_err(|_| StorageError::Write)?;
    match slot_info(flash, region)? {
        Some(back) if back == info => Ok(info),
        _ => Err(StorageError::Verify),
    }
}

/// Read the pretrained blob into `buf` (as many bytes as its header's `total_len` says, bounded
/// by the region and the buffer); the model's loader validates it.
pub fn read_pretrained<'b, F: Flash>(
    flash: &mut F,
    buf: &'b mut [u8],
) -> Result<&'b [u8], StorageError> {
    let cap = (flash.region_len(Region::Pretrained) as usize).min(buf.len());
    let mut h = [0u8; BLOB_MIN_LEN];
    let hn = h.len().min(cap);
    let head = h.get_mut(..hn).ok_or(StorageError::Read)?;
    flash
        .read(Region::Pretrained, 0, head)
        .map_err(|_| StorageError::Read)?;
    let total = le32(&h, BLOB_TOTAL_LEN_AT) as usize;
    let n = total.clamp(hn, cap);
    let blob = buf.get_mut(..n).ok_or(StorageError::TooSmall)?;
    flash
        .read(Region::Pretrained, 0, blob)
        .map_err(|_| StorageError::Read)?;
    Ok(blob)
}

/// Count this boot: read the record, add one (start at 1 if missing or corrupt), write it back.
/// Returns the new count; a failure to write is ignored (the count is still reported), and 0
/// means the board has no boot record.
pub fn bump_boot_count<F: Flash>(flash: &mut F) -> u32 {
    if (flash.region_len(Region::BootRecord) as usize) < BOOT_RECORD_LEN {
        return 0;
    }
    let mut r = [0u8; BOOT_RECORD_LEN];
    let prev = match flash.read(Region::BootRecord, 0, &mut r) {
        Ok(()) if r[..4] == BOOT_MAGIC && odt_core::blob::crc32(&r[..8]) == le32(&r, 8) => {
            le32(&r, 4)
        }
        _ => 0,
    };
    let count = prev.wrapping_add(1).max(1);
    r[..4].copy_from_slice(&BOOT_MAGIC);
    r[4..8].copy_from_slice(&count.to_le_bytes());
    let crc = odt_core::blob::crc32(&r[..8]);
    r[8..12].copy_from_slice(&crc.to_le_bytes());
    if flash.erase(Region::BootRecord).is_ok() {
        let _ = flash.write(Region::BootRecord, 0, &r);
    }
    count
}

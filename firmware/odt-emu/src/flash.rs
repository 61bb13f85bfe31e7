//! Emulated NOR flash: four regions in one image, optionally kept in a file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use odt_app::{Flash, Region};

/// Bytes of each save slot.
pub const SLOT_LEN: usize = 32 * 1024;
/// Bytes of the pretrained region.
pub const PRETRAINED_LEN: usize = 32 * 1024;
/// Bytes of the boot-record region.
pub const BOOT_LEN: usize = 4 * 1024;
/// Whole image: slot 0, slot 1, pretrained, boot record, in that order.
pub const IMAGE_LEN: usize = 2 * SLOT_LEN + PRETRAINED_LEN + BOOT_LEN;

fn extent(r: Region) -> (usize, usize) {
    match r {
        Region::Slot0 => (0, SLOT_LEN),
        Region::Slot1 => (SLOT_LEN, SLOT_LEN),
        Region::Pretrained => (2 * SLOT_LEN, PRETRAINED_LEN),
        Region::BootRecord => (2 * SLOT_LEN + PRETRAINED_LEN, BOOT_LEN),
    }
}

/// Flash errors (reported to the host as `ERROR(FLASH)`).
#[derive(Debug)]
#[allow(dead_code)] // the payloads are for `{:?}` in logs
pub enum FlashError {
    /// Access outside the region.
    OutOfRange,
    /// The backing file could not be written.
    Io(std::io::Error),
}

/// NOR semantics: erase sets `0xFF`, programming can only clear bits.
pub struct FileFlash {
    image: Vec<u8>,
    file: Option<File>,
}

impl FileFlash {
    /// A flash that lives in RAM only (erased).
    pub fn in_memory() -> Self {
        Self {
            image: vec![0xFF; IMAGE_LEN],
            file: None,
        }
    }

    /// Open (or create, erased) the flash image file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("--flash {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("--flash {}: {e}", path.display()))?
            .len();
        let mut image = vec![0xFF; IMAGE_LEN];
        if len == 0 {
            file.write_all(&image)
                .and_then(|_| file.flush())
                .map_err(|e| format!("--flash {}: cannot initialise: {e}", path.display()))?;
        } else if len as usize != IMAGE_LEN {
            return Err(format!(
                "--flash {}: {len} bytes, but an odt-emu flash image has {IMAGE_LEN} bytes \
                 (delete it to start with an erased flash)",
                path.display()
            ));
        } else {
            file.read_exact(&mut image)
                .map_err(|e| format!("--flash {}: {e}", path.display()))?;
        }
        Ok(Self {
            image,
            file: Some(file),
        })
    }

    fn persist(&mut self, at: usize, len: usize) -> Result<(), FlashError> {
        if let Some(f) = self.file.as_mut() {
            f.seek(SeekFrom::Start(at as u64)).map_err(FlashError::Io)?;
            f.write_all(&self.image[at..at + len])
                .map_err(FlashError::Io)?;
            f.flush().map_err(FlashError::Io)?;
        }
        Ok(())
    }

    fn range(region: Region, offset: u32, len: usize) -> Result<usize, FlashError> {
        let (start, size) = extent(region);
        let off = offset as usize;
        if off.checked_add(len).is_none_or(|end| end > size) {
            return Err(FlashError::OutOfRange);
        }
        Ok(start + off)
    }

    /// Flash the pretrained region (what a programmer does; the application never writes it).
    pub fn program_pretrained(&mut self, blob: &[u8]) -> Result<(), String> {
        let (start, size) = extent(Region::Pretrained);
        if blob.len() > size {
            return Err(format!(
                "the pretrained blob ({} bytes) exceeds the {size}-byte region",
                blob.len()
            ));
        }
        let region = &mut self.image[start..start + size];
        region.fill(0xFF);
        region[..blob.len()].copy_from_slice(blob);
        self.persist(start, size)
            .map_err(|e| format!("cannot write the flash file: {e:?}"))
    }
}

impl Flash for FileFlash {
    type Error = FlashError;

    fn region_len(&self, region: Region) -> u32 {
        extent(region).1 as u32
    }

    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        let at = Self::range(region, offset, buf.len())?;
        buf.copy_from_slice(&self.image[at..at + buf.len()]);
        Ok(())
    }

    fn erase(&mut self, region: Region) -> Result<(), FlashError> {
        let (start, size) = extent(region);
        self.image[start..start + size].fill(0xFF);
        self.persist(start, size)
    }

    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let at = Self::range(region, offset, data.len())?;
        for (d, s) in self.image[at..at + data.len()].iter_mut().zip(data) {
            *d &= *s;
        }
        self.persist(at, data.len())
    }
}

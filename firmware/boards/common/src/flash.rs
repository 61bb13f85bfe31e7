//! [`odt_app::Flash`] over a data partition of a raw SPI NOR flash.
//!
//! The board crate supplies [`RawFlash`] (absolute addresses; on the ESP32 family this is
//! `esp_storage::FlashStorage`) and the partition's offset and length from the partition table;
//! [`PartitionFlash`] maps the application's [`Region`]s onto it ([`crate::layout`]), checks every
//! access against the region, refuses writes to the pretrained region, and serves the pretrained
//! model from the firmware image when one was embedded at build time.

use odt_app::{Flash, Region, WRITE_ALIGN};

use crate::layout::{self, SECTOR};

/// A raw NOR flash addressed from its start.
pub trait RawFlash {
    /// Driver error.
    type Error: core::fmt::Debug;
    /// Read `buf.len()` bytes at `addr` (any alignment).
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Program `data` at `addr`; `addr` and `data.len()` are multiples of 4.
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Erase the [`SECTOR`]-byte sector at `addr` (sector aligned).
    fn erase_sector(&mut self, addr: u32) -> Result<(), Self::Error>;
}

/// Why a flash access was refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError<E> {
    /// The region does not exist on this board (no `odt` partition, or no pretrained model).
    NoRegion,
    /// Offset or length outside the region.
    OutOfRange,
    /// A write not aligned to [`WRITE_ALIGN`].
    Unaligned,
    /// The pretrained region is read only for the firmware.
    ReadOnly,
    /// The flash driver failed.
    Device(E),
}

/// Where `Region::Pretrained` reads come from (decided once, at start-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PretrainedSource {
    /// The blob embedded in the firmware image at build time (`ODT_MODEL_BLOB`).
    Embedded,
    /// The pretrained region of the `odt` partition (it starts with the blob magic `ODTM`).
    Partition,
    /// Neither: `RESET_PRETRAINED` fails and the boot model is `init_random(1)` unless a slot
    /// holds a saved model.
    None,
}

/// The `odt` partition as an [`odt_app::Flash`].
pub struct PartitionFlash<R> {
    raw: R,
    /// `(offset, len)` of the partition on the flash, if it is usable.
    partition: Option<(u32, u32)>,
    embedded: &'static [u8],
    pretrained: PretrainedSource,
    /// Called between sector erases and reads of long regions (feeds the watchdog).
    tick: fn(),
    sectors_erased: u32,
}

impl<R: RawFlash> PartitionFlash<R> {
    /// Wrap `raw`. `partition` is the `odt` partition's `(offset, len)` from the partition
    /// table (`None`, or one shorter than [`layout::PARTITION_LEN`] or not sector aligned, means
    /// no storage: saving fails and the boot count stays 0). `embedded` is the pretrained blob
    /// compiled into the firmware (empty if none): it takes precedence over the partition's
    /// pretrained region. `tick` runs between long flash operations.
    pub fn new(raw: R, partition: Option<(u32, u32)>, embedded: &'static [u8], tick: fn()) -> Self {
        let partition = partition
            .filter(|&(off, len)| off.is_multiple_of(SECTOR) && len >= layout::PARTITION_LEN);
        let mut me = Self {
            raw,
            partition,
            embedded,
            pretrained: PretrainedSource::None,
            tick,
            sectors_erased: 0,
        };
        me.pretrained = if !embedded.is_empty() {
            PretrainedSource::Embedded
        } else if me.partition_magic_is_blob() {
            PretrainedSource::Partition
        } else {
            PretrainedSource::None
        };
        me
    }

    fn partition_magic_is_blob(&mut self) -> bool {
        let Some(base) = self.partition_region_base(Region::Pretrained) else {
            return false;
        };
        let mut magic = [0u8; 4];
        self.raw.read(base, &mut magic).is_ok() && magic == odt_core::blob::MAGIC
    }

    /// Absolute address of `region` in the partition (`None` without a partition).
    fn partition_region_base(&self, region: Region) -> Option<u32> {
        self.partition
            .map(|(off, _)| off + layout::region(region).0)
    }

    /// Whether the `odt` partition was found and is used.
    pub fn has_partition(&self) -> bool {
        self.partition.is_some()
    }

    /// The partition's `(offset, len)`, if used.
    pub fn partition(&self) -> Option<(u32, u32)> {
        self.partition
    }

    /// Where the pretrained model comes from.
    pub fn pretrained_source(&self) -> PretrainedSource {
        self.pretrained
    }

    /// Sectors erased so far (blank sectors are skipped, see [`Flash::erase`]).
    pub fn sectors_erased(&self) -> u32 {
        self.sectors_erased
    }

    /// The raw flash.
    pub fn raw_mut(&mut self) -> &mut R {
        &mut self.raw
    }

    /// Absolute address of `offset..offset + len` in `region`, checked.
    fn locate(&self, region: Region, offset: u32, len: usize) -> Result<u32, FlashError<R::Error>> {
        let base = self
            .partition_region_base(region)
            .ok_or(FlashError::NoRegion)?;
        let end = (offset as u64) + (len as u64);
        if end > self.region_len(region) as u64 {
            return Err(FlashError::OutOfRange);
        }
        Ok(base + offset)
    }

    /// Whether the sector at `addr` reads as all `0xFF`.
    fn sector_blank(&mut self, addr: u32) -> Result<bool, FlashError<R::Error>> {
        let mut chunk = [0u8; 256];
        let mut at = 0;
        while at < SECTOR {
            self.raw
                .read(addr + at, &mut chunk)
                .map_err(FlashError::Device)?;
            if chunk.iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            at += chunk.len() as u32;
        }
        Ok(true)
    }
}

impl<R: RawFlash> Flash for PartitionFlash<R> {
    type Error = FlashError<R::Error>;

    fn region_len(&self, region: Region) -> u32 {
        match (region, self.pretrained) {
            (Region::Pretrained, PretrainedSource::Embedded) => self.embedded.len() as u32,
            (Region::Pretrained, PretrainedSource::None) => 0,
            _ if self.partition.is_some() => layout::region(region).1,
            _ => 0,
        }
    }

    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        if region == Region::Pretrained && self.pretrained == PretrainedSource::Embedded {
            let start = offset as usize;
            let src = start
                .checked_add(buf.len())
                .and_then(|end| self.embedded.get(start..end))
                .ok_or(FlashError::OutOfRange)?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        if region == Region::Pretrained && self.pretrained == PretrainedSource::None {
            return Err(FlashError::NoRegion);
        }
        let addr = self.locate(region, offset, buf.len())?;
        self.raw.read(addr, buf).map_err(FlashError::Device)
    }

    /// Erase every sector of the region that is not already blank (a save erases only the
    /// sectors the previous blob used, which keeps `SAVE` fast and spares the flash).
    fn erase(&mut self, region: Region) -> Result<(), Self::Error> {
        if region == Region::Pretrained {
            return Err(FlashError::ReadOnly);
        }
        let base = self.locate(region, 0, 0)?;
        let len = self.region_len(region);
        let mut at = 0;
        while at < len {
            if !self.sector_blank(base + at)? {
                self.raw
                    .erase_sector(base + at)
                    .map_err(FlashError::Device)?;
                self.sectors_erased = self.sectors_erased.wrapping_add(1);
            }
            (self.tick)();
            at += SECTOR;
        }
        Ok(())
    }

    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        if region == Region::Pretrained {
            return Err(FlashError::ReadOnly);
        }
        if !(offset as usize).is_multiple_of(WRITE_ALIGN) || !data.len().is_multiple_of(WRITE_ALIGN)
        {
            return Err(FlashError::Unaligned);
        }
        let addr = self.locate(region, offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        self.raw.write(addr, data).map_err(FlashError::Device)
    }
}

//! The SPI flash through `esp-storage`, and the `odt` partition from the partition table.

use esp_bootloader_esp_idf::partitions::{read_partition_table, PARTITION_TABLE_MAX_LEN};
use esp_storage::{FlashStorage, FlashStorageError};
use odt_board_common::layout::{PARTITION_LABEL, PARTITION_SUBTYPE, PARTITION_TYPE, SECTOR};
use odt_board_common::RawFlash;

/// [`RawFlash`] over `esp_storage::FlashStorage` (absolute flash addresses).
pub struct EspFlash(FlashStorage<'static>);

impl EspFlash {
    /// Wrap the flash driver.
    pub fn new(storage: FlashStorage<'static>) -> Self {
        Self(storage)
    }
}

impl RawFlash for EspFlash {
    type Error = FlashStorageError;

    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        // `bytewise-read` lets read_nor take any offset and length.
        self.0.read_nor(addr, buf)
    }

    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), Self::Error> {
        self.0.write_nor(addr, data)
    }

    fn erase_sector(&mut self, addr: u32) -> Result<(), Self::Error> {
        self.0.erase(addr, addr + SECTOR)
    }
}

/// `(offset, len)` of the data partition labelled `odt` (type data, subtype 0x40), if the
/// partition table has one. Flash encryption is not supported for it (the partition must not
/// be flagged `encrypted`).
pub fn find_partition(storage: &mut FlashStorage<'static>) -> Option<(u32, u32)> {
    let mut buf = [0u8; PARTITION_TABLE_MAX_LEN];
    let table = read_partition_table(storage, &mut buf).ok()?;
    let found = table
        .iter()
        .find(|p| {
            p.label_as_str() == PARTITION_LABEL
                && p.raw_type() == PARTITION_TYPE
                && p.raw_subtype() == PARTITION_SUBTYPE
                && !p.is_encrypted()
        })
        .map(|p| (p.offset(), p.len()));
    found
}

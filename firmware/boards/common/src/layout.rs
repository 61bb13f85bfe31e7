//! Layout of the `odt` data partition (offsets relative to the partition start).
//!
//! | region      | offset    | size     | written by                                   |
//! |-------------|-----------|----------|----------------------------------------------|
//! | boot record | `0x00000` | 4 KiB    | the firmware, once per boot                  |
//! | (reserved)  | `0x01000` | 60 KiB   | nothing (kept erased for future records)     |
//! | slot 0      | `0x10000` | 64 KiB   | the firmware on `SAVE`                       |
//! | slot 1      | `0x20000` | 64 KiB   | the firmware on `SAVE`                       |
//! | pretrained  | `0x30000` | 64 KiB   | the user (`espflash write-bin`), never the firmware |
//!
//! The partition is [`PARTITION_LEN`] = 256 KiB: `partitions.csv` of each board crate places it
//! at flash offset `0x110000`, so the absolute addresses are `0x110000` (boot record),
//! `0x120000` / `0x130000` (slots) and `0x140000` (pretrained).
//! A 64 KiB region holds any blob up to 64 KiB − 16 bytes; the largest blob `FirmwareMlp` can
//! load (`MAX_BLOB_LEN`, about 19.4 KiB) is far smaller.

use odt_app::Region;

/// Flash sector (erase unit) of the ESP32 family's SPI NOR flash.
pub const SECTOR: u32 = 4096;

/// Partition label the firmware looks for in the partition table.
pub const PARTITION_LABEL: &str = "odt";
/// Partition type (data) and subtype (0x40, the first "custom" data subtype).
pub const PARTITION_TYPE: u8 = 0x01;
/// Data subtype of the `odt` partition.
pub const PARTITION_SUBTYPE: u8 = 0x40;
/// Offset of the `odt` partition in `partitions.csv` (informational: the firmware reads the real
/// offset from the partition table).
pub const PARTITION_OFFSET: u32 = 0x11_0000;
/// Size of the `odt` partition; a smaller partition is not used (no storage, reported in the
/// boot banner).
pub const PARTITION_LEN: u32 = 0x4_0000;

/// `(offset, len)` of `region` inside the partition.
pub const fn region(region: Region) -> (u32, u32) {
    match region {
        Region::BootRecord => (0x0_0000, 0x1000),
        Region::Slot0 => (0x1_0000, 0x1_0000),
        Region::Slot1 => (0x2_0000, 0x1_0000),
        Region::Pretrained => (0x3_0000, 0x1_0000),
    }
}

/// All regions, in flash order.
pub const REGIONS: [Region; 4] = [
    Region::BootRecord,
    Region::Slot0,
    Region::Slot1,
    Region::Pretrained,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_sector_aligned_disjoint_and_fit() {
        let mut end = 0;
        for r in REGIONS {
            let (off, len) = region(r);
            assert!(off.is_multiple_of(SECTOR), "{r:?}");
            assert!(len.is_multiple_of(SECTOR), "{r:?}");
            assert!(off >= end, "{r:?} overlaps");
            end = off + len;
        }
        assert!(end <= PARTITION_LEN);
        assert!(PARTITION_OFFSET.is_multiple_of(0x1_0000));
    }

    #[test]
    fn every_firmware_model_fits_a_slot_and_the_pretrained_region() {
        let need = odt_core::models::FirmwareMlp::MAX_BLOB_LEN + odt_app::storage::SLOT_HEADER;
        assert!(need as u32 <= region(Region::Slot0).1);
        assert!(need as u32 <= region(Region::Slot1).1);
        assert!(odt_core::models::FirmwareMlp::MAX_BLOB_LEN as u32 <= region(Region::Pretrained).1);
    }
}

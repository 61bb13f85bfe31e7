//! The boot banner: one line of ASCII text the firmware sends over the link before it answers
//! any frame, e.g.
//!
//! ```text
//! odt-esp32c3 0.1.0 (protocol 1): boot 7, model from slot 1 (generation 12), link uart0 921600 baud
//! ```
//!
//! It is wrapped in `0x00` bytes: the host's frame decoder (`docs/protocol.md` §1) ends whatever
//! garbage preceded it (the ROM boot messages) at the first `0x00`, then discards the banner as one
//! undecodable frame at the second. A person watching the port (`espflash monitor`) reads it.

use core::fmt::{self, Write};

use odt_app::{BootInfo, BootSource};

use crate::flash::PretrainedSource;

/// What the banner reports.
#[derive(Clone, Copy, Debug)]
pub struct BannerInfo<'a> {
    /// Firmware name, e.g. `odt-esp32c3`.
    pub board: &'a str,
    /// Firmware version (`CARGO_PKG_VERSION`).
    pub version: &'a str,
    /// What `App::new` did.
    pub boot: BootInfo,
    /// Where the pretrained model comes from.
    pub pretrained: PretrainedSource,
    /// Whether the `odt` partition was found.
    pub storage: bool,
    /// Link description, e.g. `uart0 921600 baud`.
    pub link: &'a str,
    /// Link baud rate (0 when not applicable, e.g. USB).
    pub baud: u32,
}

struct SliceWriter<'b> {
    out: &'b mut [u8],
    n: usize,
}

impl Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // Keep the text free of the frame delimiter; truncate silently when full.
            let b = if b == 0 { b'?' } else { b };
            if let Some(slot) = self.out.get_mut(self.n) {
                *slot = b;
                self.n += 1;
            }
        }
        Ok(())
    }
}

impl BannerInfo<'_> {
    fn write_text(&self, w: &mut impl Write) -> fmt::Result {
        write!(
            w,
            "{} {} (protocol 1): boot {}, ",
            self.board, self.version, self.boot.boot_count
        )?;
        match self.boot.source {
            BootSource::Slot { slot, generation } => {
                write!(w, "model from slot {slot} (generation {generation})")?
            }
            BootSource::Pretrained => match self.pretrained {
                PretrainedSource::Embedded => w.write_str("pretrained model (embedded in firmware)")?,
                _ => w.write_str("pretrained model (flash partition)")?,
            },
            BootSource::Unchanged => w.write_str(
                "NO PRETRAINED MODEL: random weights init_random(1); upload one or rebuild with ODT_MODEL_BLOB",
            )?,
        }
        if !self.storage {
            w.write_str(", NO 'odt' PARTITION: SAVE/RESTORE unavailable")?;
        }
        write!(w, ", link {}", self.link)?;
        if self.baud != 0 {
            write!(w, " {} baud", self.baud)?;
        }
        Ok(())
    }

    /// Write the framed banner (`0x00`, text, `\r\n`, `0x00`) into `out`; returns its length.
    /// The text is truncated if `out` is too small; `out` should hold at least 2 bytes.
    pub fn render(&self, out: &mut [u8]) -> usize {
        let cap = out.len();
        if cap < 2 {
            return 0;
        }
        out[0] = 0;
        let mut w = SliceWriter {
            out: &mut out[1..cap - 1],
            n: 0,
        };
        let _ = self.write_text(&mut w);
        let _ = w.write_str("\r\n");
        let n = 1 + w.n;
        out[n] = 0;
        n + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        source: BootSource,
        pretrained: PretrainedSource,
        storage: bool,
    ) -> BannerInfo<'static> {
        BannerInfo {
            board: "odt-esp32c3",
            version: "0.1.0",
            boot: BootInfo {
                source,
                boot_count: 7,
            },
            pretrained,
            storage,
            link: "uart0",
            baud: 921_600,
        }
    }

    #[test]
    fn renders_framed_text_without_inner_zeros() {
        let mut out = [0xAAu8; 256];
        let b = info(
            BootSource::Slot {
                slot: 1,
                generation: 12,
            },
            PretrainedSource::Embedded,
            true,
        );
        let n = b.render(&mut out);
        assert_eq!(out[0], 0);
        assert_eq!(out[n - 1], 0);
        let text = core::str::from_utf8(&out[1..n - 1]).unwrap();
        assert_eq!(
            text,
            "odt-esp32c3 0.1.0 (protocol 1): boot 7, model from slot 1 (generation 12), \
             link uart0 921600 baud\r\n"
        );
        assert!(!out[1..n - 1].contains(&0));
    }

    #[test]
    fn says_when_weights_are_random_and_storage_missing() {
        let mut out = [0u8; 300];
        let n = info(BootSource::Unchanged, PretrainedSource::None, false).render(&mut out);
        let text = core::str::from_utf8(&out[1..n - 1]).unwrap();
        assert!(text.contains("init_random(1)"), "{text}");
        assert!(text.contains("NO 'odt' PARTITION"), "{text}");
    }

    #[test]
    fn truncates_into_small_buffers() {
        let mut out = [0u8; 16];
        let n = info(BootSource::Pretrained, PretrainedSource::Partition, true).render(&mut out);
        assert_eq!(n, 16);
        assert_eq!(out[0], 0);
        assert_eq!(out[15], 0);
        assert!(!out[1..15].contains(&0));
        assert_eq!(
            info(BootSource::Pretrained, PretrainedSource::None, true).render(&mut [0u8; 1]),
            0
        );
    }
}

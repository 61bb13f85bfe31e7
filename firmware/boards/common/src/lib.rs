//! # odt-board-common: what the ESP32 board crates share
//!
//! Everything here is independent of the chip and of esp-hal, so it is unit-tested on the host
//! (`cargo test` in this directory) while the board crates only glue it to the hardware:
//!
//! - [`layout`]: where the save slots, the pretrained model and the boot record live inside the
//!   `odt` data partition (`docs/protocol.md` §4), and [`flash::PartitionFlash`], the
//!   [`odt_app::Flash`] implementation over any raw NOR flash ([`flash::RawFlash`]);
//! - [`ring::Ring`]: the byte ring buffer a UART receive interrupt fills;
//! - [`banner`]: the one-line boot message sent over the link before the first frame.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod banner;
pub mod flash;
pub mod layout;
pub mod ring;

pub use flash::{FlashError, PartitionFlash, PretrainedSource, RawFlash};
pub use ring::Ring;

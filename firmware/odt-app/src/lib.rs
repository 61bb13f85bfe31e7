//! # odt-app: the terrain_odt co-processor application (board-agnostic)
//!
//! The firmware logic that sits between a serial link to the host and an
//! [`odt_core::Model`]: it speaks the link protocol of `docs/protocol.md` (via `odt-proto`),
//! applies the training stream exactly once and in order, reports predictions and statistics,
//! transfers models, and saves/restores them in two flash slots that survive a power loss
//! mid-save.
//!
//! A board crate provides two small traits, [`Transport`] (non-blocking byte I/O) and
//! [`Flash`] (region read/erase/write), and runs:
//!
//! ```ignore
//! static mut MODEL: FirmwareMlp = FirmwareMlp::new();
//! let mut app: App<'_, Uart, Partitions, { FirmwareMlp::MAX_BLOB_LEN }> =
//!     App::new(model, uart, flash, AppConfig::new(FirmwareMlp::BATCH as u8))?;
//! loop {
//!     app.poll();
//! }
//! ```
//!
//! `no_std`, heap-free, no panics: every input (any byte stream, any blob, any flash content)
//! ends in a response or an error value.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod hal;
pub mod storage;

pub use app::{blob_error_detail, App, AppConfig, BootInfo, BootSource, InitError};
pub use hal::{Flash, Region, Transport, WRITE_ALIGN};

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut v = 0u32;
    let mut i = 0;
    while i < b.len() {
        let d = b[i];
        if d >= b'0' && d <= b'9' {
            v = v * 10 + (d - b'0') as u32;
        }
        i += 1;
    }
    v
}

/// This firmware's version for `INFO`: `major << 16 | minor << 8 | patch` of the crate version.
pub const FIRMWARE_VERSION: u32 = (parse_u32(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
    | (parse_u32(env!("CARGO_PKG_VERSION_MINOR")) << 8)
    | parse_u32(env!("CARGO_PKG_VERSION_PATCH"));

#[cfg(test)]
mod tests;

//! # odt-board-esp: esp-hal glue for the terrain_odt co-processor boards
//!
//! The chip-specific board crates (`../esp32c3`, `../esp32`) only pick pins and a transport and
//! call [`run`]. Everything else is shared:
//!
//! - [`uart_link::UartLink`]: UART [`Transport`] with an interrupt-driven 4 KiB receive ring, so
//!   no byte is lost while a training step runs (the UART's own FIFO is 128 bytes, 1.4 ms at
//!   921600 baud);
//! - [`usb_link::UsbLink`] (feature `usb-serial-jtag`): the chip's USB-serial-JTAG port;
//! - [`esp_flash`]: the SPI flash (`esp-storage`) and the `odt` partition from the partition table;
//! - [`watchdog`]: the RTC watchdog, fed by the main loop and between flash sector erases;
//! - [`run`]: boot (watchdog, flash, model, `odt_app::App`, banner) and the `poll()` loop.
#![no_std]
#![deny(missing_docs)]

pub mod esp_flash;
pub mod uart_link;
#[cfg(feature = "usb-serial-jtag")]
pub mod usb_link;
pub mod watchdog;

use esp_hal::peripherals::{FLASH, RTC_TIMER};
use odt_app::{App, AppConfig, Transport};
use odt_board_common::banner::BannerInfo;
use odt_board_common::PartitionFlash;
use odt_core::models::FirmwareMlp;

pub use esp_flash::EspFlash;

/// What a board tells [`run`].
#[derive(Clone, Copy, Debug)]
pub struct BoardConfig {
    /// Firmware name for the banner, e.g. `odt-esp32c3`.
    pub name: &'static str,
    /// Firmware version (`env!("CARGO_PKG_VERSION")`).
    pub version: &'static str,
    /// Link description for the banner, e.g. `uart0` or `usb-serial-jtag`.
    pub link: &'static str,
    /// UART baud rate (0 for USB).
    pub baud: u32,
    /// Watchdog timeout in milliseconds.
    pub watchdog_ms: u32,
}

/// The co-processor firmware: start the watchdog, open the flash and the `odt` partition, start
/// `model` as a synthetic 102-64-32-5 MLP (`init_random_mlp(.., 1)`), let `odt_app::App` replace
/// it with the newest saved model or the pretrained one (`embedded`, else the partition's
/// pretrained region; any MLP within `FirmwareMlp`'s capacity), send the boot banner, then answer
/// the host forever.
pub fn run<T: Transport>(
    link: T,
    flash: FLASH<'static>,
    rtc_timer: RTC_TIMER<'static>,
    embedded: &'static [u8],
    model: &'static mut FirmwareMlp,
    cfg: &BoardConfig,
) -> ! {
    watchdog::start(rtc_timer, cfg.watchdog_ms);

    let mut storage = esp_storage::FlashStorage::new(flash);
    let partition = esp_flash::find_partition(&mut storage);
    let flash = PartitionFlash::new(EspFlash::new(storage), partition, embedded, watchdog::feed);
    let pretrained = flash.pretrained_source();
    let has_storage = flash.has_partition();

    // The fallback when flash holds no usable model; App::new replaces it otherwise. The shape is
    // within the capacity, so this cannot fail.
    let _ = model.init_random_mlp(&[102, 64, 32, 5], 1);
    let app = App::<T, PartitionFlash<EspFlash>, { FirmwareMlp::MAX_BLOB_LEN }>::new(
        model,
        link,
        flash,
        AppConfig::new(FirmwareMlp::BATCH as u8),
    );
    // Cannot fail: the blob buffer is exactly FirmwareMlp::MAX_BLOB_LEN.
    let Ok(mut app) = app else {
        panic!("odt: blob buffer too small")
    };

    let mut banner = [0u8; 256];
    let n = BannerInfo {
        board: cfg.name,
        version: cfg.version,
        boot: app.boot_info(),
        pretrained,
        storage: has_storage,
        link: cfg.link,
        baud: cfg.baud,
    }
    .render(&mut banner);
    let _ = app.transport_mut().write(banner.get(..n).unwrap_or(&[]));

    loop {
        app.poll();
        watchdog::feed();
    }
}

//! terrain_odt co-processor firmware for the ESP32-C3.
//!
//! Host link: UART0 (GPIO21 TX, GPIO20 RX: the USB-UART bridge of ESP32-C3-DevKitM-1 /
//! DevKitC-02) at `ODT_BAUD` (default 921600), or with feature `usb-serial-jtag` the chip's own
//! USB port. Everything else is in `odt-board-esp` (../esp-shared) and `odt-app`.
#![no_std]
#![no_main]
#![deny(clippy::mem_forget)]

use core::ptr::addr_of_mut;

use esp_hal::clock::CpuClock;
use esp_hal::main;
use odt_board_esp::BoardConfig;
use odt_core::models::FirmwareMlp;

mod board_config {
    include!(concat!(env!("OUT_DIR"), "/board_config.rs"));
}

// Application descriptor the ESP-IDF second-stage bootloader checks.
esp_bootloader_esp_idf::esp_app_desc!();

/// The pretrained model given by `ODT_MODEL_BLOB` at build time (empty if none).
static PRETRAINED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pretrained.bin"));

/// The model, an MLP whose shape comes from the blob (weights arena, activations and trainer
/// state: about 22.6 KiB, `make mem`), in `.bss`.
static mut MODEL: FirmwareMlp = FirmwareMlp::new();

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // odt-app does not panic on any input; if something else does, start over (the boot count
    // in flash records it).
    esp_hal::system::software_reset()
}

#[main]
fn main() -> ! {
    let p = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));

    // SAFETY: the only reference to MODEL, taken once before the main loop starts.
    let model = unsafe { &mut *addr_of_mut!(MODEL) };

    #[cfg(not(feature = "usb-serial-jtag"))]
    let (link, name) = {
        use esp_hal::uart::Uart;
        use odt_board_esp::uart_link::{self, UartLink};
        let Ok(uart) = Uart::new(p.UART0, uart_link::config(board_config::BAUD)) else {
            panic!("UART0 config")
        };
        (
            UartLink::new(uart.with_tx(p.GPIO21).with_rx(p.GPIO20)),
            "uart0",
        )
    };
    #[cfg(feature = "usb-serial-jtag")]
    let (link, name) = {
        use esp_hal::usb::usb_serial_jtag::UsbSerialJtag;
        use odt_board_esp::usb_link::UsbLink;
        (
            UsbLink::new(UsbSerialJtag::new(p.USB_DEVICE)),
            "usb-serial-jtag",
        )
    };

    let cfg = BoardConfig {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        link: name,
        baud: if cfg!(feature = "usb-serial-jtag") {
            0
        } else {
            board_config::BAUD
        },
        watchdog_ms: board_config::WATCHDOG_MS,
    };
    odt_board_esp::run(link, p.FLASH, p.RTC_TIMER, PRETRAINED, model, &cfg)
}

//! USB-serial-JTAG transport (the chip's built-in USB CDC port, e.g. ESP32-C3 boards without a
//! USB-UART bridge).
//!
//! The host's USB transfers are flow controlled: bytes wait in the host until the 64-byte
//! receive FIFO has room, so polling from the main loop loses nothing. Transmission waits at
//! most [`TX_TIMEOUT_MS`] per frame for the host to take the data (nobody may have the port
//! open); after a timeout, frames are dropped at once until the host sends something again.

use esp_hal::time::{Duration, Instant};
use esp_hal::usb::usb_serial_jtag::UsbSerialJtag;
use esp_hal::Blocking;
use odt_app::Transport;

/// How long one frame may wait for the host to read.
pub const TX_TIMEOUT_MS: u64 = 50;

/// Transport errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsbError {
    /// The host did not read within [`TX_TIMEOUT_MS`] (port closed or unplugged); the frame
    /// was dropped.
    TxTimeout,
}

/// The USB-serial-JTAG link.
pub struct UsbLink {
    usb: UsbSerialJtag<'static, Blocking>,
    host_stalled: bool,
}

impl UsbLink {
    /// Take over the USB-serial-JTAG driver.
    pub fn new(usb: UsbSerialJtag<'static, Blocking>) -> Self {
        Self {
            usb,
            host_stalled: false,
        }
    }
}

impl Transport for UsbLink {
    type Error = UsbError;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UsbError> {
        // Called between frames: a long burst of frames is progress, not a hang.
        crate::watchdog::feed();
        let mut n = 0;
        for slot in buf.iter_mut() {
            match self.usb.read_byte() {
                Ok(b) => {
                    *slot = b;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        if n > 0 {
            self.host_stalled = false;
        }
        Ok(n)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), UsbError> {
        if self.host_stalled {
            return Err(UsbError::TxTimeout);
        }
        let deadline = Instant::now() + Duration::from_millis(TX_TIMEOUT_MS);
        for &b in data {
            while self.usb.write_byte_nb(b).is_err() {
                if Instant::now() > deadline {
                    self.host_stalled = true;
                    return Err(UsbError::TxTimeout);
                }
            }
        }
        while self.usb.flush_tx_nb().is_err() {
            if Instant::now() > deadline {
                self.host_stalled = true;
                return Err(UsbError::TxTimeout);
            }
        }
        Ok(())
    }
}

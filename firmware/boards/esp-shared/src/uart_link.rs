//! UART transport with an interrupt-filled receive ring.
//!
//! The UART interrupt (RX FIFO above [`RX_FIFO_THRESHOLD`] bytes, or [`RX_TIMEOUT_SYMBOLS`] idle
//! symbol times after the last byte) moves the hardware FIFO into a [`RX_RING`]-byte ring; the
//! main loop's [`Transport::read`] empties the ring. A full ring drops bytes (counted, reported as
//! one [`LinkError::Lost`]); the protocol's CRC and retransmission recover.
//! Transmission writes the TX FIFO in pieces, each inside a short critical section, so the
//! receive interrupt is never held off for long.

use core::cell::RefCell;

use critical_section::Mutex;
use esp_hal::uart::{Config, RxConfig, Uart, UartInterrupt};
use esp_hal::Blocking;
use odt_app::Transport;
use odt_board_common::Ring;

/// Receive ring size (bytes): more than a go-back-N window of 8 training frames (8 × 111).
pub const RX_RING: usize = 4096;
/// RX FIFO level that raises the interrupt (the FIFO holds 128 bytes).
pub const RX_FIFO_THRESHOLD: u16 = 32;
/// Idle time, in symbol (byte) times, after which the remaining bytes are collected.
pub const RX_TIMEOUT_SYMBOLS: u8 = 3;

static UART: Mutex<RefCell<Option<Uart<'static, Blocking>>>> = Mutex::new(RefCell::new(None));
static RX: Mutex<RefCell<Ring<RX_RING>>> = Mutex::new(RefCell::new(Ring::new()));

/// Transport errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Bytes were lost since the last read: `dropped` because the ring was full, `hw_errors`
    /// receive errors (FIFO overflow, framing, parity, glitch) reported by the UART.
    Lost {
        /// Bytes dropped at the ring.
        dropped: u32,
        /// Hardware receive errors.
        hw_errors: u32,
    },
    /// The UART driver is not installed (cannot happen after [`UartLink::new`]).
    NoUart,
    /// The UART reported a transmit error.
    Tx,
}

/// The UART configuration the link uses: 8N1 at `baud`, interrupt thresholds as above.
pub fn config(baud: u32) -> Config {
    Config::default().with_baudrate(baud).with_rx(
        RxConfig::default()
            .with_fifo_full_threshold(RX_FIFO_THRESHOLD)
            .with_timeout(RX_TIMEOUT_SYMBOLS),
    )
}

/// The UART link (a handle: the driver lives in a `static` shared with the interrupt).
pub struct UartLink {
    _private: (),
}

impl UartLink {
    /// Take over `uart` (configured with [`config`] and its pins): install the receive
    /// interrupt and start filling the ring. Call once.
    pub fn new(mut uart: Uart<'static, Blocking>) -> Self {
        uart.set_interrupt_handler(uart_rx_isr);
        critical_section::with(|cs| {
            uart.listen(UartInterrupt::RxFifoFull | UartInterrupt::RxTimeout);
            UART.borrow_ref_mut(cs).replace(uart);
        });
        Self { _private: () }
    }
}

#[esp_hal::handler]
fn uart_rx_isr() {
    critical_section::with(|cs| {
        let mut uart = UART.borrow_ref_mut(cs);
        let Some(uart) = uart.as_mut() else { return };
        let mut ring = RX.borrow_ref_mut(cs);
        let mut chunk = [0u8; 128];
        // Bounded: the FIFO holds at most 128 bytes; a few passes also absorb bytes that arrive
        // meanwhile and a reported error (which the driver clears).
        for _ in 0..4 {
            match uart.read_buffered(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    ring.push_slice(chunk.get(..n).unwrap_or(&[]));
                }
                Err(_) => ring.note_error(),
            }
        }
        uart.clear_interrupts(UartInterrupt::RxFifoFull | UartInterrupt::RxTimeout);
    });
}

impl Transport for UartLink {
    type Error = LinkError;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        // Called between frames: a long burst of frames is progress, not a hang.
        crate::watchdog::feed();
        critical_section::with(|cs| {
            let mut ring = RX.borrow_ref_mut(cs);
            let (dropped, hw_errors) = ring.take_losses();
            if dropped != 0 || hw_errors != 0 {
                return Err(LinkError::Lost { dropped, hw_errors });
            }
            Ok(ring.pop_into(buf))
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), LinkError> {
        let mut rest = data;
        while !rest.is_empty() {
            let sent = critical_section::with(|cs| {
                let mut uart = UART.borrow_ref_mut(cs);
                let uart = uart.as_mut().ok_or(LinkError::NoUart)?;
                if !uart.write_ready() {
                    return Ok(0); // FIFO full: let the interrupt in, then try again
                }
                uart.write(rest).map_err(|_| LinkError::Tx)
            })?;
            rest = rest.get(sent..).unwrap_or(&[]);
        }
        Ok(())
    }
}

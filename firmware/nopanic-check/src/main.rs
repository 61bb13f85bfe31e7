//! Link-time proof that the co-processor firmware has no reachable panic.
//!
//! The panic handler calls a symbol that does not exist. With fat LTO the optimiser removes every
//! panic path it can prove unreachable; if any remains (an unprovable bounds check, a division
//! by a value that might be zero, an `unwrap`), the link fails with
//! `undefined symbol: __odt_panic_path_is_reachable`. Build with `--features locate` to get an
//! image whose rodata holds the file/line of every remaining panic (tools/check_no_panic.sh
//! prints them). Inputs come from volatile reads so nothing is constant-folded away.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};

static mut INPUT: [u8; 256] = [0; 256];
static mut SINK: u32 = 0;

fn byte(i: usize) -> u8 {
    unsafe { read_volatile(core::ptr::addr_of!(INPUT).cast::<u8>().add(i % 256)) }
}
fn sink(v: u32) {
    unsafe { write_volatile(core::ptr::addr_of_mut!(SINK), v) }
}

#[cfg(not(feature = "app"))]
fn run() {
    use odt_proto::*;
    let mut dec = PacketDecoder::new();
    let mut pkt = [0u8; MAX_PACKET];
    let mut frame = [0u8; MAX_FRAME];
    for i in 0..100_000 {
        if let Some(r) = dec.push(byte(i)) {
            let n = match r.map_err(RxError::Frame).and_then(decode_request) {
                Ok((seq, req)) => encode_message(seq, &req, &mut pkt, &mut frame).unwrap_or(0),
                Err(e) => encode_message(
                    e.seq(),
                    &Response::Error(e.to_error()),
                    &mut pkt,
                    &mut frame,
                )
                .unwrap_or(0),
            };
            sink(n as u32 + frame[byte(i + 1) as usize] as u32);
        }
    }
}

#[cfg(feature = "app")]
fn run() {
    use odt_app::*;
    struct T;
    impl Transport for T {
        type Error = ();
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
            let n = byte(1) as usize % (buf.len() + 1);
            for (k, b) in buf.iter_mut().take(n).enumerate() {
                *b = byte(k + 2);
            }
            Ok(n)
        }
        fn write(&mut self, data: &[u8]) -> Result<(), ()> {
            sink(data.len() as u32);
            Ok(())
        }
    }
    struct F;
    impl Flash for F {
        type Error = ();
        fn region_len(&self, _r: Region) -> u32 {
            byte(3) as u32 * 1024
        }
        fn read(&mut self, _r: Region, o: u32, buf: &mut [u8]) -> Result<(), ()> {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = byte(o as usize + k);
            }
            if byte(4) == 0 {
                Err(())
            } else {
                Ok(())
            }
        }
        fn erase(&mut self, _r: Region) -> Result<(), ()> {
            Ok(())
        }
        fn write(&mut self, _r: Region, _o: u32, d: &[u8]) -> Result<(), ()> {
            sink(d.len() as u32);
            Ok(())
        }
    }
    // The firmware's model, whose shape comes from the blob (as the board crates run it).
    use odt_core::models::FirmwareMlp;
    static mut MODEL: FirmwareMlp = FirmwareMlp::new();
    let model = unsafe { &mut *core::ptr::addr_of_mut!(MODEL) };
    let _ = model.init_random_mlp(&[102, 64, 32, 5], 1);
    if let Ok(mut app) =
        App::<_, _, { FirmwareMlp::MAX_BLOB_LEN }>::new(model, T, F, AppConfig::new(1))
    {
        loop {
            sink(app.poll() as u32);
        }
    }
}

#[no_mangle]
pub extern "C" fn _start() -> ! {
    run();
    loop {}
}

#[cfg(not(feature = "locate"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    extern "C" {
        fn __odt_panic_path_is_reachable() -> !;
    }
    unsafe { __odt_panic_path_is_reachable() }
}

#[cfg(feature = "locate")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Some(l) = info.location() {
        sink(l.line());
        sink(l.file().as_ptr() as u32);
    }
    loop {}
}

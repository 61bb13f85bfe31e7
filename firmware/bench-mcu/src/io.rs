//! Output and exit.
//!
//! * Cortex-M: ARM semihosting (`bkpt 0xAB`): SYS_WRITE0 for text, SYS_EXIT_EXTENDED for the
//!   exit code. QEMU needs `-semihosting-config enable=on,target=native`; text goes to its stderr.
//! * RISC-V `virt`: the NS16550A UART at 0x1000_0000 (QEMU's `-serial stdio`, no set-up
//!   needed in QEMU) and the `sifive_test` device at 0x10_0000 for the exit code.
//!
//! Formatting is a tiny integer-only line buffer: no `core::fmt`, so nothing here can pull in
//! float formatting or panicking code.

/// Normal end of the benchmark.
pub const EXIT_OK: u32 = 0;
/// The panic handler.
pub const EXIT_PANIC: u32 = 101;
/// A CPU fault / trap.
pub const EXIT_FAULT: u32 = 102;
/// odt-core returned an `Err`.
pub const EXIT_ODT_ERROR: u32 = 103;
/// A self-check of the benchmark failed (e.g. too many marker hits).
#[cfg_attr(not(feature = "f32-baseline"), allow(dead_code))]
pub const EXIT_CHECK: u32 = 104;

#[cfg(target_arch = "arm")]
mod imp {
    const SYS_WRITE0: u32 = 0x04;
    const SYS_EXIT_EXTENDED: u32 = 0x20;
    const ADP_STOPPED_APPLICATION_EXIT: u32 = 0x2_0026;

    #[inline(never)]
    unsafe fn semihost(op: u32, arg: *const u8) -> u32 {
        let mut r0 = op;
        core::arch::asm!("bkpt 0xAB", inout("r0") r0, in("r1") arg, options(nostack));
        r0
    }

    /// `bytes` must end with a NUL.
    pub fn write0(bytes: &[u8]) {
        // SAFETY: the caller's buffer is NUL-terminated (LineBuf guarantees it).
        unsafe {
            semihost(SYS_WRITE0, bytes.as_ptr());
        }
    }

    pub fn exit(code: u32) -> ! {
        let block = [ADP_STOPPED_APPLICATION_EXIT, code];
        // SAFETY: the parameter block lives on the stack for the duration of the call.
        unsafe {
            semihost(SYS_EXIT_EXTENDED, block.as_ptr() as *const u8);
        }
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(target_arch = "riscv32")]
mod imp {
    const UART_THR: *mut u8 = 0x1000_0000 as *mut u8;
    const UART_LSR: *const u8 = 0x1000_0005 as *const u8;
    const SIFIVE_TEST: *mut u32 = 0x0010_0000 as *mut u32;

    pub fn write0(bytes: &[u8]) {
        for &b in bytes {
            if b == 0 {
                break;
            }
            // SAFETY: MMIO registers of the virt board's UART.
            unsafe {
                while core::ptr::read_volatile(UART_LSR) & 0x20 == 0 {}
                core::ptr::write_volatile(UART_THR, b);
            }
        }
    }

    pub fn exit(code: u32) -> ! {
        // 0x5555 = pass; (code << 16) | 0x3333 = fail with exit status `code`.
        let v = if code == 0 {
            0x5555
        } else {
            (code << 16) | 0x3333
        };
        // SAFETY: MMIO register of the virt board's test device.
        unsafe { core::ptr::write_volatile(SIFIVE_TEST, v) };
        loop {
            core::hint::spin_loop();
        }
    }
}

pub use imp::exit;

/// One output line, sent with [`LineBuf::flush`]. Silently truncates past its capacity.
pub struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 256],
            len: 0,
        }
    }

    pub fn s(&mut self, text: &str) -> &mut Self {
        for &b in text.as_bytes() {
            if self.len < self.buf.len() - 2 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    pub fn u(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut n = 0;
        loop {
            tmp[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 || n == tmp.len() {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            if self.len < self.buf.len() - 2 {
                self.buf[self.len] = tmp[n];
                self.len += 1;
            }
        }
        self
    }

    pub fn i(&mut self, v: i64) -> &mut Self {
        if v < 0 {
            self.s("-");
        }
        self.u(v.unsigned_abs())
    }

    /// Key/value pair ` key=value`.
    pub fn kv(&mut self, key: &str, v: i64) -> &mut Self {
        self.s(" ").s(key).s("=").i(v)
    }

    pub fn flush(&mut self) {
        let n = self.len.min(self.buf.len() - 2); // always self.len; lets the compiler drop bounds checks
        self.buf[n] = b'\n';
        self.buf[n + 1] = 0;
        imp::write0(&self.buf[..n + 2]);
        self.len = 0;
    }
}

/// Print one line of plain text.
pub fn line(text: &str) {
    LineBuf::new().s(text).flush();
}

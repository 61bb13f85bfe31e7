//! Start-up code: vector table (Cortex-M), reset/entry assembly, trap handlers.
//!
//! Hand-written instead of cortex-m-rt/riscv-rt to keep the image and the start-up path small
//! and identical in spirit on both architectures:
//! 1. zero `.bss`, copy `.data` from its load address (Cortex-M; on RISC-V it is loaded in place),
//! 2. Cortex-M4F only: enable the FPU (CPACR.CP10/CP11 = full access) before any FP instruction,
//! 3. call [`crate::bench_main`], which never returns (it exits through semihosting or the
//!    `sifive_test` device).
//!
//! Any fault or trap exits QEMU with [`crate::io::EXIT_FAULT`].

#[cfg(target_arch = "arm")]
mod arm {
    use crate::io;

    extern "C" {
        fn reset_handler() -> !;
    }

    /// Word 1 of the vector table (word 0, the initial SP, is emitted by `link/arm.ld`).
    #[link_section = ".vector_table.reset"]
    #[no_mangle]
    #[used]
    static RESET_VECTOR: unsafe extern "C" fn() -> ! = reset_handler;

    /// Words 2..15: NMI, HardFault, MemManage, BusFault, UsageFault, 4 reserved, SVCall,
    /// DebugMonitor, reserved, PendSV, SysTick. All of them end the run with an error code.
    #[link_section = ".vector_table.exceptions"]
    #[no_mangle]
    #[used]
    static EXCEPTIONS: [unsafe extern "C" fn() -> !; 14] = [fault_handler; 14];

    unsafe extern "C" fn fault_handler() -> ! {
        io::exit(io::EXIT_FAULT)
    }

    // Reset: zero .bss, copy .data, (FPU), call bench_main. Valid ARMv6-M (Thumb-1) code, so
    // the same text serves the Cortex-M0 and the Cortex-M4F.
    core::arch::global_asm!(
        ".section .text.reset_handler,\"ax\",%progbits",
        ".global reset_handler",
        ".type reset_handler,%function",
        ".thumb_func",
        "reset_handler:",
        "    ldr r0, =_sbss",
        "    ldr r1, =_ebss",
        "    movs r2, #0",
        "1:  cmp r0, r1",
        "    bhs 2f",
        "    str r2, [r0]",
        "    adds r0, #4",
        "    b 1b",
        "2:  ldr r0, =_sdata",
        "    ldr r1, =_edata",
        "    ldr r2, =_sidata",
        "3:  cmp r0, r1",
        "    bhs 4f",
        "    ldr r3, [r2]",
        "    str r3, [r0]",
        "    adds r0, #4",
        "    adds r2, #4",
        "    b 3b",
        "4:  bl enable_fpu",
        "    bl bench_main",
        "5:  b 5b",
        ".ltorg",
        ".size reset_handler, . - reset_handler",
    );

    // Cortex-M4F (hard-float ABI): grant full access to CP10/CP11 in CPACR (0xE000ED88).
    #[cfg(target_abi = "eabihf")]
    core::arch::global_asm!(
        ".section .text.enable_fpu,\"ax\",%progbits",
        ".global enable_fpu",
        ".type enable_fpu,%function",
        ".thumb_func",
        "enable_fpu:",
        "    ldr r0, =0xE000ED88",
        "    ldr r1, [r0]",
        "    orr r1, r1, #(0xF << 20)",
        "    str r1, [r0]",
        "    dsb",
        "    isb",
        "    bx lr",
        ".ltorg",
    );

    #[cfg(not(target_abi = "eabihf"))]
    core::arch::global_asm!(
        ".section .text.enable_fpu,\"ax\",%progbits",
        ".global enable_fpu",
        ".type enable_fpu,%function",
        ".thumb_func",
        "enable_fpu:",
        "    bx lr",
    );
}

#[cfg(target_arch = "riscv32")]
mod riscv {
    use crate::io;

    // Entry at 0x8000_0000 (first in .text, see link/riscv-virt.ld): gp, sp, trap vector,
    // zero .bss, call bench_main. Interrupts stay disabled (mstatus.MIE = 0 after reset).
    core::arch::global_asm!(
        ".section .text.init,\"ax\",@progbits",
        ".global _start",
        "_start:",
        "    .option push",
        "    .option norelax",
        "    la gp, __global_pointer$",
        "    .option pop",
        "    la sp, _stack_top",
        "    la t0, trap_entry",
        "    csrw mtvec, t0",
        "    la t0, _sbss",
        "    la t1, _ebss",
        "1:  bgeu t0, t1, 2f",
        "    sw zero, 0(t0)",
        "    addi t0, t0, 4",
        "    j 1b",
        "2:  call bench_main",
        "3:  j 3b",
        ".balign 4",
        "trap_entry:",
        "    la sp, _stack_top",
        "    call trap_handler",
        "4:  j 4b",
    );

    #[no_mangle]
    extern "C" fn trap_handler() -> ! {
        io::exit(io::EXIT_FAULT)
    }
}

/// Stack high-water mark: paint the free stack with a pattern, run, find the deepest overwritten
/// word. Reports the bytes used below `_stack_top`, including the start-up and `bench_main`
/// frames (what a real application would have to reserve). Only the [`WINDOW`] bytes below the
/// top are painted (the RISC-V board has megabytes of free RAM); a result equal to `WINDOW`
/// means "at least".
pub mod stack {
    const PATTERN: u32 = 0xA5A5_A5A5;
    /// Bytes below the current stack pointer left unpainted (the painter's own frame).
    const MARGIN: usize = 256;
    /// Painted and scanned span below `_stack_top`.
    pub const WINDOW: usize = 32 * 1024;

    extern "C" {
        static mut _ebss: u32;
        static mut _stack_top: u32;
    }

    #[inline(always)]
    fn sp() -> usize {
        let sp: usize;
        // SAFETY: reads the stack pointer register only.
        unsafe {
            #[cfg(target_arch = "arm")]
            core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
            #[cfg(target_arch = "riscv32")]
            core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
        }
        sp
    }

    /// (lowest painted address, top of stack).
    fn bounds() -> (usize, usize) {
        // Only the addresses of the linker symbols are taken (no unsafe needed).
        let ebss = core::ptr::addr_of_mut!(_ebss) as usize;
        let top = core::ptr::addr_of_mut!(_stack_top) as usize;
        (ebss.max(top - WINDOW), top)
    }

    /// Fill the unused stack (from the end of .bss to just below the current frame).
    #[inline(never)]
    pub fn paint() {
        let (lo, _) = bounds();
        let hi = (sp() - MARGIN) & !3;
        let mut p = (lo + 3) & !3;
        while p < hi {
            // SAFETY: [lo, hi) is free RAM between .bss and the live stack.
            unsafe { core::ptr::write_volatile(p as *mut u32, PATTERN) };
            p += 4;
        }
    }

    /// Bytes of stack used since the last [`paint`] (deepest overwritten word up to the top).
    #[inline(never)]
    pub fn used() -> usize {
        let (lo, top) = bounds();
        let mut p = (lo + 3) & !3;
        // SAFETY: reads free RAM below the stack.
        while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PATTERN {
            p += 4;
        }
        top - p
    }
}

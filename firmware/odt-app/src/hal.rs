//! What the application needs from a board: a byte transport and a region-based flash.
//!
//! Both traits are deliberately small (in the spirit of `embedded-io` and `embedded-storage`) so a
//! board crate can implement them over its HAL's UART/USB-serial and flash partitions in a few
//! lines. The application never blocks in a read, and never assumes anything about a flash beyond
//! what is written here.

/// A serial byte stream to the host (UART, USB CDC, a socket in the emulator…).
pub trait Transport {
    /// Error of the underlying driver. The application counts transport errors and carries on:
    /// the link protocol recovers from lost or damaged bytes.
    type Error: core::fmt::Debug;

    /// Copy bytes that have already arrived into `buf` **without blocking**; returns how many
    /// (0 when none are pending). `buf` is never empty.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// Send all of `data` (a complete frame). May block until the bytes are queued for
    /// transmission.
    fn write(&mut self, data: &[u8]) -> Result<(), Self::Error>;
}

/// A flash region the application uses (`docs/protocol.md` §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// Model save slot 0.
    Slot0,
    /// Model save slot 1.
    Slot1,
    /// The pretrained model blob (a raw FORMAT.md blob at offset 0). **Read only** for the
    /// application: it is written when the board is flashed.
    Pretrained,
    /// The boot-count record (12 bytes are used).
    BootRecord,
}

impl Region {
    /// The two save slots, in index order.
    pub const SLOTS: [Region; 2] = [Region::Slot0, Region::Slot1];
}

/// Flash storage split into [`Region`]s, NOR-flash semantics.
///
/// Contract the application keeps:
/// - it only calls [`erase`](Flash::erase) and [`write`](Flash::write) on `Slot0`, `Slot1`
///   and `BootRecord`, never on `Pretrained`;
/// - it erases a region before writing it, and writes each byte at most once per erase;
/// - every write offset and length is a multiple of [`WRITE_ALIGN`] (data is padded with `0xFF`);
/// - reads may have any offset and length inside the region.
///
/// An implementation returns an error for an access outside the region. A write that fails
/// part-way (power loss) may leave any prefix of the data written: the application's slot format
/// tolerates that.
pub trait Flash {
    /// Error of the underlying driver (reported to the host as `ERROR(FLASH)`).
    type Error: core::fmt::Debug;

    /// Size of `region` in bytes (0 if the board has no such region).
    fn region_len(&self, region: Region) -> u32;

    /// Read `buf.len()` bytes at `offset` of `region`.
    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Erase the whole of `region` (every byte becomes `0xFF`).
    fn erase(&mut self, region: Region) -> Result<(), Self::Error>;

    /// Program `data` at `offset` of `region` (previously erased).
    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
}

/// Alignment of every offset and length the application passes to [`Flash::write`].
pub const WRITE_ALIGN: usize = 4;

impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        (**self).read(buf)
    }
    fn write(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        (**self).write(data)
    }
}

impl<F: Flash + ?Sized> Flash for &mut F {
    type Error = F::Error;
    fn region_len(&self, region: Region) -> u32 {
        (**self).region_len(region)
    }
    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(region, offset, buf)
    }
    fn erase(&mut self, region: Region) -> Result<(), Self::Error> {
        (**self).erase(region)
    }
    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        (**self).write(region, offset, data)
    }
}

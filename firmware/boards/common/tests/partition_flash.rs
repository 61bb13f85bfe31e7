//! `PartitionFlash` against an in-memory NOR flash, with `odt_app`'s storage code and the whole
//! `App` on top (what a board does at boot and on `SAVE`).

use odt_app::storage::{self, SLOT_HEADER};
use odt_app::{App, AppConfig, BootSource, Flash, Region, Transport};
use odt_board_common::layout::{self, PARTITION_LEN, PARTITION_OFFSET, SECTOR};
use odt_board_common::{FlashError, PartitionFlash, PretrainedSource, RawFlash};
use odt_core::models::{FirmwareMlp, TerrainMlp};
use odt_core::Model;
use odt_proto::{
    decode_response, encode_message, PacketDecoder, Request, Response, MAX_FRAME, MAX_PACKET,
};

const FLASH_SIZE: usize = 0x20_0000;
const PART: Option<(u32, u32)> = Some((PARTITION_OFFSET, PARTITION_LEN));

/// NOR flash: erase sets a sector to 0xFF, programming ANDs, writes must be word aligned.
#[derive(Clone)]
struct Nor {
    mem: Vec<u8>,
    erases: Vec<u32>,
}

impl Nor {
    fn new() -> Self {
        Self {
            mem: vec![0xFF; FLASH_SIZE],
            erases: Vec::new(),
        }
    }
}

#[derive(Debug, PartialEq)]
enum NorError {
    Bounds,
    Align,
}

impl RawFlash for Nor {
    type Error = NorError;
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), NorError> {
        let a = addr as usize;
        let src = self.mem.get(a..a + buf.len()).ok_or(NorError::Bounds)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), NorError> {
        if !addr.is_multiple_of(4) || !data.len().is_multiple_of(4) {
            return Err(NorError::Align);
        }
        let a = addr as usize;
        let dst = self
            .mem
            .get_mut(a..a + data.len())
            .ok_or(NorError::Bounds)?;
        for (d, s) in dst.iter_mut().zip(data) {
            *d &= *s;
        }
        Ok(())
    }
    fn erase_sector(&mut self, addr: u32) -> Result<(), NorError> {
        if !addr.is_multiple_of(SECTOR) {
            return Err(NorError::Align);
        }
        let a = addr as usize;
        self.mem
            .get_mut(a..a + SECTOR as usize)
            .ok_or(NorError::Bounds)?
            .fill(0xFF);
        self.erases.push(addr);
        Ok(())
    }
}

fn tick() {}

fn flash(nor: Nor, embedded: &'static [u8]) -> PartitionFlash<Nor> {
    PartitionFlash::new(nor, PART, embedded, tick)
}

fn mlp_blob(seed: u32) -> Vec<u8> {
    let mut m = Box::new(TerrainMlp::new());
    m.init_random(seed);
    let mut out = vec![0u8; TerrainMlp::BLOB_LEN];
    let n = m.save_blob(&mut out).unwrap();
    out.truncate(n);
    out
}

fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

#[test]
fn regions_map_to_the_documented_absolute_addresses() {
    let mut f = flash(Nor::new(), &[]);
    for (region, addr) in [
        (Region::BootRecord, 0x11_0000u32),
        (Region::Slot0, 0x12_0000),
        (Region::Slot1, 0x13_0000),
    ] {
        assert_eq!(f.region_len(region), layout::region(region).1);
        f.erase(region).unwrap();
        f.write(region, 8, &[1, 2, 3, 4]).unwrap();
        let a = addr as usize + 8;
        assert_eq!(&f.raw_mut().mem[a..a + 4], &[1, 2, 3, 4], "{region:?}");
        let mut back = [0u8; 3];
        f.read(region, 9, &mut back).unwrap();
        assert_eq!(back, [2, 3, 4]);
    }
    assert_eq!(
        f.region_len(Region::Pretrained),
        0,
        "empty partition region, nothing embedded"
    );
    assert_eq!(f.pretrained_source(), PretrainedSource::None);
}

#[test]
fn accesses_outside_a_region_or_unaligned_are_refused() {
    let mut f = flash(Nor::new(), &[]);
    let len = f.region_len(Region::Slot0);
    let mut b = [0u8; 8];
    assert_eq!(
        f.read(Region::Slot0, len - 4, &mut b),
        Err(FlashError::OutOfRange)
    );
    assert_eq!(
        f.read(Region::Slot0, u32::MAX, &mut b),
        Err(FlashError::OutOfRange)
    );
    assert_eq!(
        f.write(Region::Slot0, len, &[0; 4]),
        Err(FlashError::OutOfRange)
    );
    assert_eq!(
        f.write(Region::Slot0, 2, &[0; 4]),
        Err(FlashError::Unaligned)
    );
    assert_eq!(
        f.write(Region::Slot0, 4, &[0; 3]),
        Err(FlashError::Unaligned)
    );
    assert_eq!(
        f.write(Region::Pretrained, 0, &[0; 4]),
        Err(FlashError::ReadOnly)
    );
    assert_eq!(f.erase(Region::Pretrained), Err(FlashError::ReadOnly));
    assert_eq!(
        f.read(Region::Pretrained, 0, &mut b),
        Err(FlashError::NoRegion)
    );
    // The neighbouring region was not touched by any of that.
    assert!(f.raw_mut().mem.iter().all(|&x| x == 0xFF));
}

#[test]
fn without_a_usable_partition_there_is_no_storage() {
    for part in [
        None,
        Some((PARTITION_OFFSET, PARTITION_LEN - SECTOR)),
        Some((PARTITION_OFFSET + 4, PARTITION_LEN)),
    ] {
        let mut f = PartitionFlash::new(Nor::new(), part, &[], tick);
        assert!(!f.has_partition());
        for r in layout::REGIONS {
            assert_eq!(f.region_len(r), 0);
        }
        assert_eq!(storage::bump_boot_count(&mut f), 0);
        assert!(storage::save(&mut f, &mlp_blob(1)).is_err());
        assert!(f.raw_mut().mem.iter().all(|&x| x == 0xFF));
    }
}

#[test]
fn erase_skips_blank_sectors() {
    let mut f = flash(Nor::new(), &[]);
    f.erase(Region::Slot1).unwrap();
    assert_eq!(f.sectors_erased(), 0);
    let blob = mlp_blob(3);
    storage::save(&mut f, &blob).unwrap(); // slot 0, nothing to erase
    storage::save(&mut f, &blob).unwrap(); // slot 1
    assert_eq!(f.sectors_erased(), 0);
    storage::save(&mut f, &blob).unwrap(); // slot 0 again: only the sectors the blob used
    let used = (SLOT_HEADER + blob.len()).div_ceil(SECTOR as usize) as u32;
    assert_eq!(f.sectors_erased(), used);
    assert!(f
        .raw_mut()
        .erases
        .iter()
        .all(|&a| (0x12_0000..0x13_0000).contains(&a)));
}

#[test]
fn saves_alternate_slots_and_survive_a_reboot() {
    let mut f = flash(Nor::new(), &[]);
    let (a, b) = (mlp_blob(1), mlp_blob(2));
    let s1 = storage::save(&mut f, &a).unwrap();
    let s2 = storage::save(&mut f, &b).unwrap();
    assert_eq!((s1.region, s2.region), (Region::Slot0, Region::Slot1));
    // "Reboot": a new PartitionFlash over the same memory.
    let nor = f.raw_mut().clone();
    let mut f = flash(nor, &[]);
    let [newest, older] = storage::valid_slots(&mut f).unwrap();
    let (newest, older) = (newest.unwrap(), older.unwrap());
    assert_eq!(newest.generation, s2.generation);
    let mut buf = vec![0u8; FirmwareMlp::MAX_BLOB_LEN];
    assert_eq!(
        storage::read_slot(&mut f, &newest, &mut buf).unwrap(),
        &b[..]
    );
    assert_eq!(
        storage::read_slot(&mut f, &older, &mut buf).unwrap(),
        &a[..]
    );
}

#[test]
fn pretrained_comes_from_the_firmware_then_the_partition() {
    let embedded = leak(mlp_blob(7));
    let in_partition = mlp_blob(8);
    let mut nor = Nor::new();
    let at = (PARTITION_OFFSET + layout::region(Region::Pretrained).0) as usize;
    nor.mem[at..at + in_partition.len()].copy_from_slice(&in_partition);

    let mut buf = vec![0u8; FirmwareMlp::MAX_BLOB_LEN];
    let mut f = flash(nor.clone(), embedded);
    assert_eq!(f.pretrained_source(), PretrainedSource::Embedded);
    assert_eq!(
        storage::read_pretrained(&mut f, &mut buf).unwrap(),
        embedded
    );

    let mut f = flash(nor.clone(), &[]);
    assert_eq!(f.pretrained_source(), PretrainedSource::Partition);
    assert_eq!(
        storage::read_pretrained(&mut f, &mut buf).unwrap(),
        &in_partition[..]
    );

    let mut f = flash(Nor::new(), &[]);
    assert_eq!(f.pretrained_source(), PretrainedSource::None);
    assert!(storage::read_pretrained(&mut f, &mut buf)
        .map(|b| b.is_empty())
        .unwrap_or(true));
}

// ----------------------------------------------------------------------------------------------
// The whole application on top, as the board's main() runs it.

#[derive(Default)]
struct Link {
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl Transport for Link {
    type Error = ();
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let n = buf.len().min(self.rx.len());
        buf[..n].copy_from_slice(&self.rx[..n]);
        self.rx.drain(..n);
        Ok(n)
    }
    fn write(&mut self, data: &[u8]) -> Result<(), ()> {
        self.tx.extend_from_slice(data);
        Ok(())
    }
}

fn request(seq: u16, req: &Request<'_>) -> Vec<u8> {
    let mut packet = [0u8; MAX_PACKET];
    let mut frame = [0u8; MAX_FRAME];
    let n = encode_message(seq, req, &mut packet, &mut frame).unwrap();
    frame[..n].to_vec()
}

/// Response types (`0x80 | request`, `0x7F` error) of the frames in `bytes`.
fn response_types(bytes: &[u8]) -> Vec<(u16, String)> {
    let mut dec = PacketDecoder::new();
    let mut out = Vec::new();
    for &b in bytes {
        if let Some(Ok(p)) = dec.push(b) {
            let (seq, r) = decode_response(p).unwrap();
            let kind = match r {
                Response::Info(i) => format!("INFO boot={}", i.boot_count),
                Response::Ok => "OK".to_string(),
                other => format!("{other:?}"),
            };
            out.push((seq, kind));
        }
    }
    out
}

/// What the board crates run: `FirmwareMlp` (shape from the blob) and its blob buffer.
type Board<'a> = App<'a, Link, PartitionFlash<Nor>, { FirmwareMlp::MAX_BLOB_LEN }>;

fn boot<'a>(model: &'a mut FirmwareMlp, nor: Nor, embedded: &'static [u8]) -> Board<'a> {
    model.init_random_mlp(&[102, 64, 32, 5], 1).unwrap();
    let flash = PartitionFlash::new(nor, PART, embedded, tick);
    App::new(
        model as &mut dyn Model,
        Link::default(),
        flash,
        AppConfig::new(FirmwareMlp::BATCH as u8),
    )
    .unwrap()
}

#[test]
fn app_boots_counts_boots_saves_and_reloads() {
    let mut model = Box::new(FirmwareMlp::new());
    let mut app = boot(&mut model, Nor::new(), &[]);
    assert_eq!(app.boot_info().source, BootSource::Unchanged);
    assert_eq!(app.boot_info().boot_count, 1);
    app.transport_mut().rx = [
        request(1, &Request::Hello { next_train_seq: 0 }),
        request(2, &Request::Save),
    ]
    .concat();
    assert_eq!(app.poll(), 2);
    let sent = std::mem::take(&mut app.transport_mut().tx);
    assert_eq!(
        response_types(&sent),
        vec![(1, "INFO boot=1".to_string()), (2, "OK".to_string())]
    );
    let saved_hash = app.model().state_crc32();
    let (_, mut flash) = app.into_parts();
    let nor = flash.raw_mut().clone();

    // Reboot with a different random model in RAM: the saved one comes back from slot 0.
    let mut model = Box::new(FirmwareMlp::new());
    model.init_random_mlp(&[102, 64, 32, 5], 99).unwrap();
    let app = boot(&mut model, nor, &[]);
    assert_eq!(
        app.boot_info().source,
        BootSource::Slot {
            slot: 0,
            generation: 1
        }
    );
    assert_eq!(app.boot_info().boot_count, 2);
    assert_eq!(app.model().state_crc32(), saved_hash);
}

#[test]
fn app_loads_the_embedded_pretrained_model_when_nothing_is_saved() {
    let blob = mlp_blob(42);
    let mut expect = Box::new(TerrainMlp::new());
    expect.load_blob(&blob).unwrap();
    let mut model = Box::new(FirmwareMlp::new());
    let app = boot(&mut model, Nor::new(), leak(blob));
    assert_eq!(app.boot_info().source, BootSource::Pretrained);
    assert_eq!(app.model().state_crc32(), expect.state_crc32());
}

#[test]
fn app_runs_an_embedded_pretrained_model_of_another_shape() {
    // Another robot's model: 90 inputs, 48-24-12 hidden, 4 classes.
    let mut other = Box::new(FirmwareMlp::new());
    other.init_random_mlp(&[90, 48, 24, 12, 4], 5).unwrap();
    let mut blob = vec![0u8; FirmwareMlp::MAX_BLOB_LEN];
    let n = other.save_blob(&mut blob).unwrap();
    blob.truncate(n);
    let mut model = Box::new(FirmwareMlp::new());
    let app = boot(&mut model, Nor::new(), leak(blob));
    assert_eq!(app.boot_info().source, BootSource::Pretrained);
    assert_eq!((app.model().input_len(), app.model().classes()), (90, 4));
    assert_eq!(app.model().state_crc32(), other.state_crc32());
}

//! Power loss at every point of a `SAVE` of the shipped model (issue 12): during the erase of the
//! target slot (at every byte erased so far) and during the programming of the blob and of the
//! commit header (at every byte programmed so far). After the reboot the co-processor always
//! runs either the last good saved model or the new one, never anything else, and never fails
//! to boot.
//!
//! Exhaustive, so it runs optimised: `cargo test --release -p odt-app --test power_loss`
//! (`make test` does); in a debug build it is skipped.

use odt_app::storage::SLOT_HEADER;
use odt_app::{App, AppConfig, BootSource, Flash, Region, Transport};
use odt_core::models::FirmwareMlp;
use odt_core::Model;
use odt_proto::{
    decode_response, encode_message, PacketDecoder, Request, Response, MAX_FRAME, MAX_PACKET,
};

/// The default shipped model (IMU + wheels, 110-64-32-5).
static SHIPPED: &[u8] = include_bytes!("../../../models/borealtc_mlp.odtm");

#[derive(Default)]
struct Wire {
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl Transport for Wire {
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

/// NOR flash that loses power after `budget` units of work: a unit is one byte erased (an
/// interrupted erase leaves the bytes it had not reached as they were) or one byte programmed
/// (write ANDs; the failing write programs a prefix). After the cut every call fails.
#[derive(Clone)]
struct Nor {
    regions: [Vec<u8>; 4],
    budget: Option<usize>,
    dead: bool,
}

fn idx(r: Region) -> usize {
    match r {
        Region::Slot0 => 0,
        Region::Slot1 => 1,
        Region::Pretrained => 2,
        Region::BootRecord => 3,
    }
}

const SLOT_LEN: usize = 12 * 1024;

impl Nor {
    fn new(pretrained: &[u8]) -> Self {
        let mut p = vec![0xFF; SLOT_LEN];
        p[..pretrained.len()].copy_from_slice(pretrained);
        Self {
            regions: [
                vec![0xFF; SLOT_LEN],
                vec![0xFF; SLOT_LEN],
                p,
                vec![0xFF; 256],
            ],
            budget: None,
            dead: false,
        }
    }
    fn take(&mut self, n: usize) -> (usize, bool) {
        match self.budget.as_mut() {
            Some(b) if *b < n => {
                let k = *b;
                *b = 0;
                (k, true)
            }
            Some(b) => {
                *b -= n;
                (n, false)
            }
            None => (n, false),
        }
    }
    fn reboot(&mut self) {
        self.budget = None;
        self.dead = false;
    }
}

impl Flash for Nor {
    type Error = &'static str;
    fn region_len(&self, region: Region) -> u32 {
        self.regions[idx(region)].len() as u32
    }
    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        if self.dead {
            return Err("dead");
        }
        let r = &self.regions[idx(region)];
        let s = r
            .get(offset as usize..offset as usize + buf.len())
            .ok_or("range")?;
        buf.copy_from_slice(s);
        Ok(())
    }
    fn erase(&mut self, region: Region) -> Result<(), Self::Error> {
        assert_ne!(region, Region::Pretrained);
        if self.dead {
            return Err("dead");
        }
        let len = self.regions[idx(region)].len();
        let (n, cut) = self.take(len);
        self.regions[idx(region)][..n].fill(0xFF);
        if cut {
            self.dead = true;
            return Err("power lost");
        }
        Ok(())
    }
    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        assert_ne!(region, Region::Pretrained);
        if self.dead {
            return Err("dead");
        }
        let (n, cut) = self.take(data.len());
        let r = &mut self.regions[idx(region)];
        let dst = r
            .get_mut(offset as usize..offset as usize + data.len())
            .ok_or("range")?;
        for (d, s) in dst.iter_mut().zip(&data[..n]) {
            *d &= *s;
        }
        if cut {
            self.dead = true;
            return Err("power lost");
        }
        Ok(())
    }
}

type TestApp<'a> = App<'a, Wire, Nor, { FirmwareMlp::MAX_BLOB_LEN }>;

fn boot(model: &mut FirmwareMlp, flash: Nor) -> TestApp<'_> {
    App::new(model, Wire::default(), flash, AppConfig::new(1)).expect("boots")
}

fn call(app: &mut TestApp, seq: u16, r: &Request) -> Vec<u8> {
    let mut p = [0u8; MAX_PACKET];
    let mut f = [0u8; MAX_FRAME];
    let n = encode_message(seq, r, &mut p, &mut f).unwrap();
    app.transport_mut().rx.extend_from_slice(&f[..n]);
    app.poll();
    let out = std::mem::take(&mut app.transport_mut().tx);
    let mut d = PacketDecoder::new();
    let mut replies = vec![];
    for b in out {
        if let Some(r) = d.push(b) {
            replies.push(r.unwrap().to_vec());
        }
    }
    assert_eq!(replies.len(), 1);
    replies.pop().unwrap()
}

fn ok(p: &[u8]) -> bool {
    matches!(decode_response(p).unwrap().1, Response::Ok)
}

/// Upload `blob` (the model the next SAVE writes).
fn upload(app: &mut TestApp, blob: &[u8]) {
    let crc = odt_core::blob::crc32(blob);
    assert!(ok(&call(
        app,
        1,
        &Request::UploadBegin {
            total_len: blob.len() as u32,
            crc32: crc
        }
    )));
    for (i, c) in blob.chunks(512).enumerate() {
        let r = Request::UploadChunk {
            offset: (i * 512) as u32,
            data: c,
        };
        assert!(ok(&call(app, 2 + i as u16, &r)));
    }
    assert!(ok(&call(app, 900, &Request::UploadEnd)));
}

fn state(model: &FirmwareMlp) -> u32 {
    model.state_crc32()
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "exhaustive: cargo test --release -p odt-app --test power_loss"
)]
fn power_cut_at_every_byte_of_the_erase_and_the_write_keeps_a_good_model() {
    // The last good model: the shipped one with its weights nudged (a fine-tuned one), saved.
    let mut good_blob = SHIPPED.to_vec();
    let mut newer_blob = SHIPPED.to_vec();
    {
        let mut m = FirmwareMlp::new();
        m.load_blob(SHIPPED)
            .expect("the shipped model fits the firmware");
        for (blob, seed) in [(&mut good_blob, 1u32), (&mut newer_blob, 2u32)] {
            let mut mm = FirmwareMlp::new();
            mm.load_blob(SHIPPED).unwrap();
            let x: Vec<i8> = (0..mm.input_len())
                .map(|i| ((i as u32 * 37 + seed) % 200) as i8)
                .collect();
            mm.set_train_config(&odt_core::TrainConfig::all_trainable())
                .unwrap();
            for k in 0..3 {
                mm.train_step(&x, ((seed + k) % 5) as u8).unwrap();
            }
            let n = mm.save_blob(blob).unwrap();
            blob.truncate(n);
        }
    }
    assert_ne!(good_blob, newer_blob);
    let (good, newer) = {
        let mut a = FirmwareMlp::new();
        a.load_blob(&good_blob).unwrap();
        let mut b = FirmwareMlp::new();
        b.load_blob(&newer_blob).unwrap();
        (state(&a), state(&b))
    };

    // Flash with the good model saved in a slot.
    let mut m = FirmwareMlp::new();
    let mut app = boot(&mut m, Nor::new(SHIPPED));
    upload(&mut app, &good_blob);
    assert!(ok(&call(&mut app, 950, &Request::Save)));
    let base = app.into_parts().1;

    // Every unit of work of the next save: the erase of the other slot, then every byte.
    let total = SLOT_LEN + SLOT_HEADER + newer_blob.len().div_ceil(4) * 4;
    let (mut kept_good, mut got_new) = (0usize, 0usize);
    for budget in 0..=total + 8 {
        let mut m = FirmwareMlp::new();
        let mut app = boot(&mut m, base.clone());
        assert_eq!(state_of(&app), good);
        upload(&mut app, &newer_blob);
        app.flash_mut().budget = Some(budget);
        let saved = ok(&call(&mut app, 951, &Request::Save));
        let mut flash = app.into_parts().1;
        flash.reboot();
        let mut m2 = FirmwareMlp::new();
        let app = boot(&mut m2, flash);
        assert!(
            matches!(app.boot_info().source, BootSource::Slot { .. }),
            "budget {budget}"
        );
        let got = state_of(&app);
        if saved {
            assert_eq!(got, newer, "budget {budget}: the save reported success");
            got_new += 1;
        } else {
            assert_eq!(got, good, "budget {budget}");
            kept_good += 1;
        }
    }
    assert!(
        kept_good >= total && got_new >= 1,
        "{kept_good} cuts, {got_new} completed saves"
    );
}

fn state_of(app: &TestApp) -> u32 {
    app.model().state_crc32()
}

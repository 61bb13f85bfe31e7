//! Application tests with an in-memory transport and flash (with power-loss injection).

use std::collections::VecDeque;

use odt_core::layers::Dense;
use odt_core::odt_model;
use odt_proto::{
    decode_response, encode_message, ErrorCode, ErrorMsg, Info, PacketDecoder, Request, Response,
    SetParams, Stats, TrainAck, ACK_APPLIED, ACK_DISABLED, ACK_DUP, MAX_FRAME, MAX_PACKET,
    PRED_UNKNOWN, SEQ_NONE,
};
use proptest::prelude::*;

use crate::storage::{self, SLOT_HEADER};
use crate::{App, AppConfig, BootSource, Flash, InitError, Region, Transport};

odt_model! {
    /// Small model for fast tests: 8 inputs, 3 classes, batch capacity 2.
    pub struct Tiny {
        input: 8,
        batch: 2,
        weights: i8,
        budget: 8192,
        layers: { fc1: Dense<8, 6, true>, fc2: Dense<6, 3, false> }
    }
}

const B: usize = 2048;
type TestApp<'a> = App<'a, MemTransport, MemFlash, B>;

// ----------------------------------------------------------------------------------------------
// In-memory devices.

#[derive(Default)]
struct MemTransport {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
    fail_reads: usize,
}

impl Transport for MemTransport {
    type Error = ();
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        if self.fail_reads > 0 {
            self.fail_reads -= 1;
            return Err(());
        }
        // Deliver in odd-sized pieces to exercise frame reassembly.
        let n = buf.len().min(self.rx.len()).min(7);
        for b in buf.iter_mut().take(n) {
            *b = self.rx.pop_front().unwrap();
        }
        Ok(n)
    }
    fn write(&mut self, data: &[u8]) -> Result<(), ()> {
        self.tx.extend_from_slice(data);
        Ok(())
    }
}

/// NOR-like flash: erase sets 0xFF, write ANDs. `power_budget` bytes may be programmed before
/// the power fails (the failing write programs a prefix and every later call errors);
/// `silent_tear` makes the next write store only a prefix and report success.
#[derive(Clone)]
struct MemFlash {
    regions: [Vec<u8>; 4],
    power_budget: Option<usize>,
    dead: bool,
    silent_tear: Option<usize>,
}

fn idx(r: Region) -> usize {
    match r {
        Region::Slot0 => 0,
        Region::Slot1 => 1,
        Region::Pretrained => 2,
        Region::BootRecord => 3,
    }
}

impl MemFlash {
    fn new(pretrained: &[u8]) -> Self {
        let mut p = vec![0xFF; 4096];
        p[..pretrained.len()].copy_from_slice(pretrained);
        Self {
            regions: [vec![0xFF; 4096], vec![0xFF; 4096], p, vec![0xFF; 256]],
            power_budget: None,
            dead: false,
            silent_tear: None,
        }
    }
    /// Power back on: faults cleared, contents kept.
    fn reboot(&mut self) {
        self.power_budget = None;
        self.dead = false;
        self.silent_tear = None;
    }
}

impl Flash for MemFlash {
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
        assert_ne!(
            region,
            Region::Pretrained,
            "the app must never erase the pretrained region"
        );
        if self.dead {
            return Err("dead");
        }
        self.regions[idx(region)].fill(0xFF);
        Ok(())
    }
    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        assert_ne!(
            region,
            Region::Pretrained,
            "the app must never write the pretrained region"
        );
        assert_eq!(offset % 4, 0, "unaligned write offset");
        assert_eq!(data.len() % 4, 0, "unaligned write length");
        if self.dead {
            return Err("dead");
        }
        let mut n = data.len();
        let mut fail = false;
        if let Some(b) = self.power_budget.as_mut() {
            if *b < n {
                n = *b;
                fail = true;
            }
            *b -= n;
        }
        if let Some(t) = self.silent_tear.take() {
            n = n.min(t);
        }
        let r = &mut self.regions[idx(region)];
        let dst = r
            .get_mut(offset as usize..offset as usize + data.len())
            .ok_or("range")?;
        for (d, s) in dst.iter_mut().zip(&data[..n]) {
            *d &= *s;
        }
        if fail {
            self.dead = true;
            return Err("power lost");
        }
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------------
// Helpers.

fn pretrained_model() -> Box<Tiny> {
    let mut m = Box::new(Tiny::new());
    m.init_random(1);
    m
}

fn pretrained_blob() -> Vec<u8> {
    let m = pretrained_model();
    let mut b = vec![0u8; Tiny::BLOB_LEN];
    let n = m.save_blob(&mut b).unwrap();
    b.truncate(n);
    b
}

fn fresh_flash() -> MemFlash {
    MemFlash::new(&pretrained_blob())
}

fn cfg() -> AppConfig {
    AppConfig::new(Tiny::BATCH as u8)
}

fn boot(model: &mut Tiny, flash: MemFlash) -> TestApp<'_> {
    App::new(model, MemTransport::default(), flash, cfg()).unwrap()
}

fn wire(seq: u16, r: &Request) -> Vec<u8> {
    let mut p = [0u8; MAX_PACKET];
    let mut f = [0u8; MAX_FRAME];
    let n = encode_message(seq, r, &mut p, &mut f).unwrap();
    f[..n].to_vec()
}

/// Send raw bytes, poll, and return every reply packet (seq, packet bytes).
fn exchange(app: &mut TestApp, bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    app.transport_mut().rx.extend(bytes);
    app.poll();
    let out = std::mem::take(&mut app.transport_mut().tx);
    let mut d = PacketDecoder::new();
    let mut v = vec![];
    for b in out {
        if let Some(r) = d.push(b) {
            let p = r.unwrap().to_vec();
            let seq = decode_response(&p).unwrap().0;
            v.push((seq, p));
        }
    }
    v
}

/// Send one request and return its one reply packet.
fn call(app: &mut TestApp, seq: u16, r: &Request) -> Vec<u8> {
    let v = exchange(app, &wire(seq, r));
    assert_eq!(v.len(), 1, "one reply per request");
    assert_eq!(v[0].0, seq, "reply echoes the sequence number");
    v[0].1.clone()
}

fn resp(p: &[u8]) -> Response<'_> {
    decode_response(p).unwrap().1
}

fn expect_ok(p: &[u8]) {
    assert_eq!(resp(p), Response::Ok, "{:?}", resp(p));
}

fn expect_err(p: &[u8], code: ErrorCode, detail: u16) {
    assert_eq!(resp(p), Response::Error(ErrorMsg::new(code, detail)));
}

fn expect_ack(p: &[u8]) -> TrainAck {
    match resp(p) {
        Response::TrainAck(a) => a,
        other => panic!("expected TRAIN_ACK, got {other:?}"),
    }
}

fn hello(app: &mut TestApp, seq: u16, next: u16) -> Info {
    match resp(&call(
        app,
        seq,
        &Request::Hello {
            next_train_seq: next,
        },
    )) {
        Response::Info(i) => i,
        other => panic!("expected INFO, got {other:?}"),
    }
}

fn stats(app: &mut TestApp) -> Stats {
    match resp(&call(app, 999, &Request::Stats)) {
        Response::Stats(s) => s,
        other => panic!("expected STATS, got {other:?}"),
    }
}

fn sample(i: usize) -> (Vec<i8>, u8) {
    let x: Vec<i8> = (0..8)
        .map(|k| (((i * 31 + k * 17) % 200) as i32 - 100) as i8)
        .collect();
    (x, ((i * 7) % 3) as u8)
}

fn train_req(x: &[i8], label: u8) -> Request<'_> {
    Request::Train { label, features: x }
}

fn params(enabled: u8, batch: u8, modes: &[u8]) -> Request<'_> {
    Request::SetParams(SetParams {
        enabled,
        lr_m: 1 << 14,
        lr_e: -20,
        batch,
        topk_min: 0xFF,
        modes,
        seed: 0x2545_F491,
    })
}

// ----------------------------------------------------------------------------------------------
// Boot, HELLO, INFO.

#[test]
fn boots_from_pretrained_and_reports_info() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    assert_eq!(app.boot_info().source, BootSource::Pretrained);
    assert_eq!(app.boot_info().boot_count, 1);
    assert_eq!(app.expected_train_seq(), None);
    let info = hello(&mut app, 5, 100);
    let reference = pretrained_model();
    assert_eq!(
        info,
        Info {
            protocol_version: 1,
            firmware_version: crate::FIRMWARE_VERSION,
            model_id: reference.meta().model_id,
            model_hash: reference.state_crc32(),
            input_len: 8,
            classes: 3,
            batch_capacity: 2,
            model_ram: Tiny::RAM_BYTES as u32,
            train_steps: 0,
            boot_count: 1,
            next_train_seq: 100,
        }
    );
    assert_eq!(crate::FIRMWARE_VERSION, 0x0000_0100);
}

#[test]
fn boot_count_survives_reboots() {
    let mut flash = fresh_flash();
    for want in 1..=3 {
        let mut m = Tiny::new();
        let app = boot(&mut m, flash);
        assert_eq!(app.boot_info().boot_count, want);
        flash = app.into_parts().1;
    }
    // A corrupt record starts over at 1.
    flash.regions[3][5] ^= 0x10;
    let mut m = Tiny::new();
    assert_eq!(boot(&mut m, flash).boot_info().boot_count, 1);
}

#[test]
fn boots_unchanged_without_any_valid_model() {
    let mut flash = fresh_flash();
    flash.regions[2][50] ^= 1; // pretrained CRC broken
    let mut m = Tiny::new();
    m.init_random(7);
    let crc = m.state_crc32();
    let app = boot(&mut m, flash);
    assert_eq!(app.boot_info().source, BootSource::Unchanged);
    assert_eq!(app.model().state_crc32(), crc);
}

#[test]
fn buffer_must_hold_the_model_blob() {
    let mut m = Tiny::new();
    let r = App::<_, _, 64>::new(&mut m, MemTransport::default(), fresh_flash(), cfg());
    assert!(
        matches!(r, Err(InitError::BufferTooSmall { need, have: 64 }) if need == Tiny::BLOB_LEN)
    );
}

// ----------------------------------------------------------------------------------------------
// Training stream.

#[test]
fn train_needs_a_session() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let (x, y) = sample(0);
    expect_err(
        &call(&mut app, 0, &train_req(&x, y)),
        ErrorCode::NoSession,
        0,
    );
}

#[test]
fn in_order_training_matches_the_reference_and_duplicates_are_not_applied() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    hello(&mut app, 0, 10);
    let mut reference = pretrained_model();
    let mut acks = vec![];
    for i in 0..20 {
        let (x, y) = sample(i);
        let a = expect_ack(&call(&mut app, 10 + i as u16, &train_req(&x, y)));
        let r = reference.train_step(&x, y).unwrap();
        assert_eq!(
            a,
            TrainAck {
                pred: r.loss.pred,
                loss_q15: r.loss.loss_q15 as u16,
                flags: ACK_APPLIED
            }
        );
        acks.push(a);
    }
    assert_eq!(app.model().state_crc32(), reference.state_crc32());
    assert_eq!(app.expected_train_seq(), Some(30));
    // Re-sent samples within the ring: original outcome, dup flag, not applied.
    for (i, orig) in acks.iter().enumerate().skip(4) {
        let (x, y) = sample(i);
        let a = expect_ack(&call(&mut app, 10 + i as u16, &train_req(&x, y)));
        assert_eq!(
            a,
            TrainAck {
                flags: orig.flags | ACK_DUP,
                ..*orig
            }
        );
    }
    // Older duplicates: acknowledged, outcome unknown.
    let (x, y) = sample(0);
    let a = expect_ack(&call(&mut app, 10, &train_req(&x, y)));
    assert_eq!(
        a,
        TrainAck {
            pred: PRED_UNKNOWN,
            loss_q15: 0,
            flags: ACK_DUP
        }
    );
    // Far behind (32768 before expected) is still a duplicate; one further is out of order.
    let a = expect_ack(&call(
        &mut app,
        30u16.wrapping_sub(32768),
        &train_req(&x, y),
    ));
    assert_eq!(a.flags, ACK_DUP);
    expect_err(
        &call(&mut app, 30u16.wrapping_sub(32769), &train_req(&x, y)),
        ErrorCode::OutOfOrder,
        30,
    );
    // A gap.
    expect_err(
        &call(&mut app, 31, &train_req(&x, y)),
        ErrorCode::OutOfOrder,
        30,
    );
    assert_eq!(app.model().state_crc32(), reference.state_crc32());
    let s = stats(&mut app);
    assert_eq!(s.train_steps, 20);
    assert_eq!(s.preq_samples, 20);
    assert_eq!(s.updates, 20);
}

#[test]
fn sequence_numbers_wrap() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    hello(&mut app, 0, 65534);
    for (k, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
        let (x, y) = sample(k);
        assert_eq!(
            expect_ack(&call(&mut app, seq, &train_req(&x, y))).flags & ACK_DUP,
            0
        );
    }
    assert_eq!(app.expected_train_seq(), Some(2));
    let (x, y) = sample(1);
    assert_eq!(
        expect_ack(&call(&mut app, 65535, &train_req(&x, y))).flags & ACK_DUP,
        ACK_DUP
    );
}

#[test]
fn hello_resumes_a_session_whose_acks_were_lost() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    hello(&mut app, 0, 0);
    for i in 0..5 {
        let (x, y) = sample(i);
        call(&mut app, i as u16, &train_req(&x, y));
    }
    let crc = app.model().state_crc32();
    // The host lost the acks of 3 and 4 and reconnects: it must not train them twice.
    assert_eq!(hello(&mut app, 1, 3).next_train_seq, 5);
    for i in 3..5 {
        let (x, y) = sample(i);
        assert_eq!(
            expect_ack(&call(&mut app, i as u16, &train_req(&x, y))).flags & ACK_DUP,
            ACK_DUP
        );
    }
    assert_eq!(app.model().state_crc32(), crc);
    // Same number: session kept.
    assert_eq!(hello(&mut app, 2, 5).next_train_seq, 5);
    // A number the co-processor never applied: a new session there.
    assert_eq!(hello(&mut app, 3, 1000).next_train_seq, 1000);
    assert_eq!(hello(&mut app, 4, 990).next_train_seq, 990);
}

#[test]
fn a_bad_label_consumes_its_sequence_number() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    hello(&mut app, 0, 0);
    let (x, _) = sample(0);
    let crc = app.model().state_crc32();
    expect_err(
        &call(&mut app, 0, &train_req(&x, 3)),
        ErrorCode::BadLabel,
        3,
    );
    assert_eq!(app.model().state_crc32(), crc);
    assert_eq!(app.expected_train_seq(), Some(1));
    let a = expect_ack(&call(&mut app, 0, &train_req(&x, 3)));
    assert_eq!(
        a,
        TrainAck {
            pred: PRED_UNKNOWN,
            loss_q15: 0,
            flags: ACK_DUP
        }
    );
    expect_ack(&call(&mut app, 1, &train_req(&x, 2)));
}

#[test]
fn wrong_feature_count_is_bad_length_and_not_consumed() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    hello(&mut app, 0, 0);
    expect_err(
        &call(&mut app, 0, &train_req(&[1, 2, 3], 0)),
        ErrorCode::BadLength,
        4,
    );
    expect_err(
        &call(&mut app, 1, &Request::Infer { features: &[0; 9] }),
        ErrorCode::BadLength,
        9,
    );
    assert_eq!(app.expected_train_seq(), Some(0));
    assert_eq!(stats(&mut app).frame_errors, 2);
}

#[test]
fn disabled_training_predicts_only() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    hello(&mut app, 0, 0);
    expect_ok(&call(&mut app, 1, &params(0, 1, &[2, 2])));
    let crc = app.model().state_crc32();
    let mut reference = pretrained_model();
    let (x, y) = sample(3);
    let a = expect_ack(&call(&mut app, 0, &train_req(&x, y)));
    let p = reference.infer(&x).unwrap();
    let want_loss = 32768 - reference.scores_q15()[y as usize];
    assert_eq!(
        a,
        TrainAck {
            pred: p.class,
            loss_q15: want_loss as u16,
            flags: ACK_DISABLED
        }
    );
    assert_eq!(app.model().state_crc32(), crc);
    let s = stats(&mut app);
    assert_eq!(
        (s.training_enabled, s.preq_samples, s.train_steps),
        (0, 1, 0)
    );
}

#[test]
fn set_params_validates_and_changes_nothing_on_error() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let bad = |enabled, lr_m, batch, modes: &'static [u8]| {
        Request::SetParams(SetParams {
            enabled,
            lr_m,
            lr_e: -20,
            batch,
            topk_min: 0xFF,
            modes,
            seed: 1,
        })
    };
    for r in [
        bad(2, 1 << 14, 1, &[2, 2]),
        bad(1, (1 << 14) - 1, 1, &[2, 2]),
        bad(1, 1 << 15, 1, &[2, 2]),
        bad(1, 1 << 14, 0, &[2, 2]),
        bad(1, 1 << 14, 3, &[2, 2]),
        bad(1, 1 << 14, 1, &[2, 3]),
        bad(1, 1 << 14, 1, &[2; 17]),
    ] {
        expect_err(&call(&mut app, 1, &r), ErrorCode::BadParams, 0);
    }
    assert_eq!(
        app.model().train_config(),
        odt_core::TrainConfig::all_trainable()
    );
    assert_eq!(stats(&mut app).training_enabled, 1);
    // Batch 2 with only the last layer training: the first sample does not apply an update.
    expect_ok(&call(&mut app, 2, &params(1, 2, &[0, 2])));
    hello(&mut app, 3, 0);
    let (x, y) = sample(0);
    assert_eq!(expect_ack(&call(&mut app, 0, &train_req(&x, y))).flags, 0);
    assert_eq!(
        expect_ack(&call(&mut app, 1, &train_req(&x, y))).flags,
        ACK_APPLIED
    );
}

#[test]
fn infer_matches_the_reference() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let mut reference = pretrained_model();
    let (x, _) = sample(9);
    let p = reference.infer(&x).unwrap();
    let want: Vec<u16> = reference.scores_q15().iter().map(|&s| s as u16).collect();
    match resp(&call(&mut app, 1, &Request::Infer { features: &x })) {
        Response::Prediction { class, scores_q15 } => {
            assert_eq!(class, p.class);
            assert_eq!(scores_q15.iter().collect::<Vec<_>>(), want);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn divergence_flag_and_loss_ema() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    // Find an input the pretrained model is confident about; label it with another class.
    let mut reference = pretrained_model();
    let mut found = None;
    for i in 0..20000usize {
        let x: Vec<i8> = (0..8)
            .map(|k| ((i * 7919 + k * 104729) % 256) as u8 as i8)
            .collect();
        let p = reference.infer(&x).unwrap();
        if p.confidence_q15 > 31000 {
            found = Some((x, (p.class + 1) % 3));
            break;
        }
    }
    let (x, wrong) = found.expect("a confident input");
    hello(&mut app, 0, 0);
    expect_ok(&call(&mut app, 1, &params(0, 1, &[2, 2])));
    for i in 0..63u16 {
        call(&mut app, i, &train_req(&x, wrong));
    }
    let s = stats(&mut app);
    assert!(s.loss_ema_q15 > 29491, "{s:?}");
    assert_eq!((s.diverged, s.preq_correct, s.preq_samples), (0, 0, 63));
    call(&mut app, 63, &train_req(&x, wrong));
    assert_eq!(stats(&mut app).diverged, 1);
    // A model replacement starts the figures over.
    expect_ok(&call(&mut app, 2, &Request::ResetPretrained));
    let s = stats(&mut app);
    assert_eq!((s.diverged, s.preq_samples, s.loss_ema_q15), (0, 0, 0));
}

// ----------------------------------------------------------------------------------------------
// Framing errors.

#[test]
fn bad_frames_are_answered_and_counted_and_the_link_resyncs() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let mut w = wire(7, &Request::Stats);
    w[3] ^= 0x20;
    let mut bytes = vec![0, 0]; // empty frames: ignored
    bytes.extend(&w);
    bytes.extend([0x05, 0x01, 0x00]); // bad COBS
    bytes.extend(wire(8, &Request::Stats));
    let replies = exchange(&mut app, &bytes);
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0].0, SEQ_NONE);
    expect_err(&replies[0].1, ErrorCode::BadFrame, 2);
    assert_eq!(replies[1].0, SEQ_NONE);
    expect_err(&replies[1].1, ErrorCode::BadFrame, 1);
    assert_eq!(replies[2].0, 8);
    match resp(&replies[2].1) {
        Response::Stats(s) => assert_eq!(s.frame_errors, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn transport_read_errors_are_counted() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    app.transport_mut().fail_reads = 1;
    assert_eq!(app.poll(), 0);
    assert_eq!(app.transport_errors(), 1);
    assert_eq!(exchange(&mut app, &wire(1, &Request::Stats)).len(), 1);
}

// ----------------------------------------------------------------------------------------------
// Storage.

fn train_some(app: &mut TestApp, from: usize, n: usize) {
    let start = app.expected_train_seq().unwrap_or_else(|| {
        hello(app, 0, 0);
        0
    });
    for i in 0..n {
        let (x, y) = sample(from + i);
        expect_ack(&call(app, start.wrapping_add(i as u16), &train_req(&x, y)));
    }
}

#[test]
fn save_restore_and_boot_pick_the_newest_slot() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    train_some(&mut app, 0, 5);
    let a = app.model().state_crc32();
    expect_ok(&call(&mut app, 1, &Request::Save));
    train_some(&mut app, 5, 5);
    assert_ne!(app.model().state_crc32(), a);
    expect_ok(&call(&mut app, 2, &Request::Restore));
    assert_eq!(app.model().state_crc32(), a);
    train_some(&mut app, 10, 3);
    let b = app.model().state_crc32();
    expect_ok(&call(&mut app, 3, &Request::Save));
    let flash = app.into_parts().1;
    let s0 = storage::slot_info(&mut flash.clone(), Region::Slot0)
        .unwrap()
        .unwrap();
    let s1 = storage::slot_info(&mut flash.clone(), Region::Slot1)
        .unwrap()
        .unwrap();
    assert_eq!((s0.generation, s1.generation), (1, 2));

    let mut m2 = Tiny::new();
    let mut app = boot(&mut m2, flash);
    assert_eq!(
        app.boot_info().source,
        BootSource::Slot {
            slot: 1,
            generation: 2
        }
    );
    assert_eq!(app.model().state_crc32(), b);
    // A third save goes to slot 0 (the older), generation 3.
    train_some(&mut app, 20, 2);
    let c = app.model().state_crc32();
    expect_ok(&call(&mut app, 1, &Request::Save));
    let flash = app.into_parts().1;
    let mut m3 = Tiny::new();
    let mut app = boot(&mut m3, flash);
    assert_eq!(
        app.boot_info().source,
        BootSource::Slot {
            slot: 0,
            generation: 3
        }
    );
    assert_eq!(app.model().state_crc32(), c);
    // Reset to pretrained, then restore brings the saved model back.
    expect_ok(&call(&mut app, 2, &Request::ResetPretrained));
    assert_eq!(app.model().state_crc32(), pretrained_model().state_crc32());
    expect_ok(&call(&mut app, 3, &Request::Restore));
    assert_eq!(app.model().state_crc32(), c);
}

#[test]
fn restore_without_a_saved_model_is_a_flash_error() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let crc = app.model().state_crc32();
    expect_err(&call(&mut app, 1, &Request::Restore), ErrorCode::Flash, 5);
    assert_eq!(app.model().state_crc32(), crc);
}

#[test]
fn a_corrupted_newest_slot_falls_back_to_the_older_one() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    train_some(&mut app, 0, 3);
    let a = app.model().state_crc32();
    expect_ok(&call(&mut app, 1, &Request::Save));
    train_some(&mut app, 3, 3);
    expect_ok(&call(&mut app, 2, &Request::Save));
    let mut flash = app.into_parts().1;
    flash.regions[1][SLOT_HEADER + 100] ^= 0x01; // newest (slot 1) rots
    let mut m2 = Tiny::new();
    let app = boot(&mut m2, flash);
    assert_eq!(
        app.boot_info().source,
        BootSource::Slot {
            slot: 0,
            generation: 1
        }
    );
    assert_eq!(app.model().state_crc32(), a);
}

/// Power fails after every possible number of programmed bytes of a SAVE: after the reboot the
/// model is always either the last good saved one or the new one, never anything else.
#[test]
fn power_loss_mid_save_never_loses_the_last_good_model() {
    // Last good model in slot 0; the newer one is made by restoring it and training 4 more
    // samples (restoring reseeds the rounding generator, so this is reproducible after a boot).
    fn make_newer(app: &mut TestApp) {
        expect_ok(&call(app, 1, &Request::Restore));
        hello(app, 2, 100);
        for i in 4..8 {
            let (x, y) = sample(i);
            expect_ack(&call(app, 100 + (i - 4) as u16, &train_req(&x, y)));
        }
    }
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    train_some(&mut app, 0, 4);
    let good = app.model().state_crc32();
    expect_ok(&call(&mut app, 1, &Request::Save));
    make_newer(&mut app);
    let newer = app.model().state_crc32();
    assert_ne!(newer, good);
    let base = app.into_parts().1;

    let total = SLOT_HEADER + Tiny::BLOB_LEN;
    let mut outcomes = [0usize; 2];
    for budget in (0..=total).step_by(3).chain([total]) {
        let mut m = Tiny::new();
        let mut app = boot(&mut m, base.clone());
        make_newer(&mut app);
        assert_eq!(app.model().state_crc32(), newer);
        app.flash_mut().power_budget = Some(budget);
        let reply = call(&mut app, 3, &Request::Save);
        let mut flash = app.into_parts().1;
        flash.reboot();
        let mut m2 = Tiny::new();
        let app = boot(&mut m2, flash);
        let got = app.model().state_crc32();
        if budget < total {
            expect_err(&reply, ErrorCode::Flash, 2);
            assert_eq!(got, good, "budget {budget}");
            outcomes[0] += 1;
        } else {
            expect_ok(&reply);
            assert_eq!(got, newer);
            outcomes[1] += 1;
        }
    }
    assert!(outcomes[0] > 100 && outcomes[1] == 1);
}

#[test]
fn a_silently_torn_write_is_caught_by_the_read_back() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    train_some(&mut app, 0, 2);
    let good = app.model().state_crc32();
    expect_ok(&call(&mut app, 1, &Request::Save));
    train_some(&mut app, 2, 2);
    app.flash_mut().silent_tear = Some(100);
    expect_err(&call(&mut app, 2, &Request::Save), ErrorCode::Flash, 4);
    let mut flash = app.into_parts().1;
    flash.reboot();
    let mut m2 = Tiny::new();
    assert_eq!(boot(&mut m2, flash).model().state_crc32(), good);
}

#[test]
fn power_loss_during_the_first_save_falls_back_to_pretrained() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    train_some(&mut app, 0, 2);
    app.flash_mut().power_budget = Some(SLOT_HEADER + Tiny::BLOB_LEN - 1);
    expect_err(&call(&mut app, 1, &Request::Save), ErrorCode::Flash, 2);
    let mut flash = app.into_parts().1;
    flash.reboot();
    let mut m2 = Tiny::new();
    let app = boot(&mut m2, flash);
    assert_eq!(app.boot_info().source, BootSource::Pretrained);
}

// ----------------------------------------------------------------------------------------------
// Model transfer.

fn other_blob() -> Vec<u8> {
    let mut m = Tiny::new();
    m.init_random(99);
    let mut b = vec![0u8; Tiny::BLOB_LEN];
    m.save_blob(&mut b).unwrap();
    b
}

#[test]
fn upload_in_any_order_with_repeats() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let blob = other_blob();
    let crc = odt_core::blob::crc32(&blob);
    expect_ok(&call(
        &mut app,
        1,
        &Request::UploadBegin {
            total_len: blob.len() as u32,
            crc32: crc,
        },
    ));
    let chunks: Vec<(usize, &[u8])> = blob
        .chunks(100)
        .enumerate()
        .map(|(i, c)| (i * 100, c))
        .collect();
    for &(off, c) in chunks.iter().rev().chain(chunks.iter().take(2)) {
        expect_ok(&call(
            &mut app,
            2,
            &Request::UploadChunk {
                offset: off as u32,
                data: c,
            },
        ));
    }
    expect_ok(&call(&mut app, 3, &Request::UploadEnd));
    let mut want = Tiny::new();
    want.load_blob(&blob).unwrap();
    assert_eq!(app.model().state_crc32(), want.state_crc32());
    // UPLOAD_END may be repeated (its OK was lost).
    expect_ok(&call(&mut app, 3, &Request::UploadEnd));
}

#[test]
fn upload_errors_leave_the_model_unchanged() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let before = app.model().state_crc32();
    let blob = other_blob();
    let n = blob.len() as u32;
    let crc = odt_core::blob::crc32(&blob);
    expect_err(
        &call(
            &mut app,
            1,
            &Request::UploadChunk {
                offset: 0,
                data: &blob[..10],
            },
        ),
        ErrorCode::BadParams,
        0,
    );
    expect_err(
        &call(&mut app, 1, &Request::UploadEnd),
        ErrorCode::BadParams,
        0,
    );
    expect_err(
        &call(
            &mut app,
            1,
            &Request::UploadBegin {
                total_len: B as u32 + 1,
                crc32: 0,
            },
        ),
        ErrorCode::TooLarge,
        B as u16,
    );
    expect_ok(&call(
        &mut app,
        1,
        &Request::UploadBegin {
            total_len: n,
            crc32: crc ^ 1,
        },
    ));
    for (i, c) in blob.chunks(512).enumerate() {
        expect_ok(&call(
            &mut app,
            2,
            &Request::UploadChunk {
                offset: (i * 512) as u32,
                data: c,
            },
        ));
    }
    expect_err(
        &call(
            &mut app,
            2,
            &Request::UploadChunk {
                offset: n - 1,
                data: &[0, 0],
            },
        ),
        ErrorCode::BadParams,
        0,
    );
    expect_err(
        &call(&mut app, 3, &Request::UploadEnd),
        ErrorCode::BadModel,
        9,
    );
    // Right CRC, wrong architecture (a blob of another model shape).
    odt_model! {
        /// Another shape.
        pub struct Other { input: 8, batch: 1, weights: i8, budget: 8192,
            layers: { fc1: Dense<8, 4, true>, fc2: Dense<4, 3, false> } }
    }
    let mut o = Other::new();
    o.init_random(3);
    let mut ob = vec![0u8; Other::BLOB_LEN];
    o.save_blob(&mut ob).unwrap();
    let ocrc = odt_core::blob::crc32(&ob);
    expect_ok(&call(
        &mut app,
        4,
        &Request::UploadBegin {
            total_len: ob.len() as u32,
            crc32: ocrc,
        },
    ));
    for (i, c) in ob.chunks(512).enumerate() {
        expect_ok(&call(
            &mut app,
            5,
            &Request::UploadChunk {
                offset: (i * 512) as u32,
                data: c,
            },
        ));
    }
    expect_err(
        &call(&mut app, 6, &Request::UploadEnd),
        ErrorCode::BadModel,
        5,
    );
    assert_eq!(app.model().state_crc32(), before);
}

#[test]
fn download_reassembles_a_consistent_snapshot() {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    train_some(&mut app, 0, 3);
    let mut want = vec![0u8; Tiny::BLOB_LEN];
    app.model().save_blob(&mut want).unwrap();
    let mut got = vec![];
    loop {
        let r = call(
            &mut app,
            1,
            &Request::Download {
                offset: got.len() as u32,
                max_len: 300,
            },
        );
        let Response::DownloadData {
            total_len,
            offset,
            data,
        } = resp(&r)
        else {
            panic!()
        };
        assert_eq!(
            (total_len as usize, offset as usize),
            (want.len(), got.len())
        );
        got.extend_from_slice(data);
        if data.is_empty() || got.len() == want.len() {
            break;
        }
        // Training between chunks does not tear the snapshot.
        train_some(&mut app, 50 + got.len(), 1);
    }
    assert_eq!(got, want);
    // max_len is capped at 512; an offset past the end is refused; the end itself is empty.
    let r = call(
        &mut app,
        2,
        &Request::Download {
            offset: 0,
            max_len: 2000,
        },
    );
    let Response::DownloadData { data, .. } = resp(&r) else {
        panic!()
    };
    assert_eq!(data.len(), want.len().min(512));
    let end = want.len() as u32;
    let r = call(
        &mut app,
        3,
        &Request::Download {
            offset: end,
            max_len: 10,
        },
    );
    let Response::DownloadData { data, .. } = resp(&r) else {
        panic!()
    };
    assert!(data.is_empty());
    expect_err(
        &call(
            &mut app,
            4,
            &Request::Download {
                offset: end + 1,
                max_len: 10,
            },
        ),
        ErrorCode::BadParams,
        0,
    );
}

// ----------------------------------------------------------------------------------------------
// Go-back-N over a lossy, duplicating, reordering channel.

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn chance(&mut self, per_mille: u32) -> bool {
        self.next() % 1000 < per_mille
    }
}

/// Drop, duplicate, reorder and corrupt whole frames.
fn channel(frames: Vec<Vec<u8>>, rng: &mut Lcg, loss: u32) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![];
    for mut f in frames {
        if rng.chance(loss) {
            continue;
        }
        if rng.chance(loss / 2) {
            let i = rng.next() as usize % f.len();
            f[i] ^= 1 + (rng.next() % 255) as u8;
        }
        if rng.chance(loss / 2) {
            out.push(f.clone());
        }
        out.push(f);
    }
    for _ in 0..out.len() / 3 {
        if rng.chance(loss) && out.len() > 1 {
            let i = rng.next() as usize % (out.len() - 1);
            out.swap(i, i + 1);
        }
    }
    out
}

fn split_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![];
    let mut cur = vec![];
    for &b in bytes {
        cur.push(b);
        if b == 0 {
            v.push(std::mem::take(&mut cur));
        }
    }
    v
}

fn go_back_n(seed: u64, loss: u32, n: usize, window: usize) {
    let mut m = Tiny::new();
    let mut app = boot(&mut m, fresh_flash());
    let mut rng = Lcg(seed);
    let first: u16 = 65500; // exercise the wrap too
    let samples: Vec<_> = (0..n).map(sample).collect();
    let mut acked = vec![None::<TrainAck>; n];
    let mut base = 0usize;
    let mut session = false;
    let mut rounds = 0;
    while base < n {
        rounds += 1;
        assert!(rounds < 20_000, "no progress");
        let mut out = vec![];
        if !session {
            out.push(wire(
                7,
                &Request::Hello {
                    next_train_seq: first.wrapping_add(base as u16),
                },
            ));
        }
        for (i, (x, y)) in samples.iter().enumerate().skip(base).take(window) {
            out.push(wire(first.wrapping_add(i as u16), &train_req(x, *y)));
        }
        let bytes: Vec<u8> = channel(out, &mut rng, loss).concat();
        app.transport_mut().rx.extend(bytes);
        app.poll();
        let back = std::mem::take(&mut app.transport_mut().tx);
        for f in channel(split_frames(&back), &mut rng, loss) {
            let mut d = PacketDecoder::new();
            for &b in &f {
                if let Some(Ok(p)) = d.push(b) {
                    let Ok((seq, r)) = decode_response(p) else {
                        continue;
                    };
                    match r {
                        Response::Info(_) => session = true,
                        Response::TrainAck(a) => {
                            let i = seq.wrapping_sub(first) as usize;
                            if i < n && acked[i].is_none_or(|o| o.flags & ACK_DUP != 0) {
                                acked[i] = Some(a);
                            }
                        }
                        Response::Error(e) if e.code == ErrorCode::NoSession => session = false,
                        _ => {}
                    }
                }
            }
        }
        while base < n && acked[base].is_some() {
            base += 1;
        }
    }
    // Exactly once, in order: the same weights as training on the samples directly.
    let mut reference = pretrained_model();
    for (i, (x, y)) in samples.iter().enumerate() {
        let r = reference.train_step(x, *y).unwrap();
        let a = acked[i].unwrap();
        if a.pred != PRED_UNKNOWN {
            assert_eq!(
                (a.pred, a.loss_q15),
                (r.loss.pred, r.loss.loss_q15 as u16),
                "sample {i}"
            );
        }
    }
    assert_eq!(app.model().state_crc32(), reference.state_crc32());
    assert_eq!(app.model().counters().steps as usize, n);
}

#[test]
fn go_back_n_clean_channel() {
    go_back_n(1, 0, 50, 8);
}

#[test]
fn go_back_n_lossy_channel() {
    for seed in 0..20 {
        go_back_n(seed, 150, 60, 8);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn go_back_n_exactly_once(seed in any::<u64>(), loss in 0u32..400, window in 1usize..12) {
        go_back_n(seed, loss, 40, window);
    }

    /// Any byte stream: no panic, and every non-empty frame gets exactly one reply.
    #[test]
    fn arbitrary_input_never_panics_and_every_frame_is_answered(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
        valid in proptest::collection::vec(0u8..15, 0..10)) {
        let mut m = Tiny::new();
        let mut app = boot(&mut m, fresh_flash());
        let mut bytes = vec![];
        for (c, v) in chunks.iter().zip(valid.iter().chain(std::iter::repeat(&0))) {
            bytes.extend(c);
            let x = [1i8; 8];
            let r = match v {
                0 => Request::Hello { next_train_seq: 0 },
                1 => train_req(&x, 1),
                2 => Request::Infer { features: &x },
                3 => Request::Stats,
                4 => params(1, 1, &[2, 2]),
                5 => Request::Save,
                6 => Request::Restore,
                7 => Request::ResetPretrained,
                8 => Request::UploadBegin { total_len: 100, crc32: 0 },
                9 => Request::UploadChunk { offset: 0, data: &[1, 2, 3] },
                10 => Request::UploadEnd,
                11 => Request::Download { offset: 0, max_len: 64 },
                12 => Request::TrainFrag { label: 1, total: 8, offset: 0, data: &x },
                13 => Request::TrainFrag { label: 1, total: 9, offset: 0, data: &x },
                _ => train_req(&x, 7),
            };
            bytes.extend(wire(3, &r));
        }
        let expected_frames = split_frames(&bytes).iter().filter(|f| f.len() > 1).count();
        let replies = exchange(&mut app, &bytes);
        prop_assert_eq!(replies.len(), expected_frames);
    }
}

// ----------------------------------------------------------------------------------------------
// A model whose shape comes from the blob (the firmware's `FirmwareMlp` kind of model).

/// Up to 16 inputs, hidden layers of 12, 6 classes, 3 Dense layers, 400 weights, batch 2.
type Shaped = odt_core::DynMlp<16, 12, 6, 2, 400, 2>;

/// A blob of an MLP with these widths (synthetic weights).
fn mlp_blob(widths: &[usize], seed: u32) -> Vec<u8> {
    let mut m = Box::new(odt_core::DynMlp::<64, 64, 16, 6, 8192, 1>::new());
    m.init_random_mlp(widths, seed).unwrap();
    let mut b = vec![0u8; 16384];
    let n = m.save_blob(&mut b).unwrap();
    b.truncate(n);
    b
}

fn upload(app: &mut TestApp, blob: &[u8]) -> Vec<u8> {
    let crc = odt_core::blob::crc32(blob);
    expect_ok(&call(
        app,
        40,
        &Request::UploadBegin {
            total_len: blob.len() as u32,
            crc32: crc,
        },
    ));
    for (i, c) in blob.chunks(512).enumerate() {
        expect_ok(&call(
            app,
            41,
            &Request::UploadChunk {
                offset: (i * 512) as u32,
                data: c,
            },
        ));
    }
    call(app, 42, &Request::UploadEnd)
}

#[test]
fn shaped_model_runs_the_pretrained_blob_and_uploads_of_other_shapes() {
    const { assert!(Shaped::MAX_BLOB_LEN <= B) };
    let mut m = Box::new(Shaped::new());
    let mut app = App::new(&mut *m, MemTransport::default(), fresh_flash(), cfg()).unwrap();
    assert_eq!(app.boot_info().source, BootSource::Pretrained);
    let info = hello(&mut app, 1, 0);
    let reference = pretrained_model();
    assert_eq!(
        (
            info.input_len,
            info.classes,
            info.model_ram,
            info.model_hash
        ),
        (8, 3, Shaped::RAM_BYTES as u32, reference.state_crc32())
    );
    // Trains like the fixed type of the same shape.
    let mut fixed = pretrained_model();
    for i in 0..6 {
        let (x, y) = sample(i);
        let a = expect_ack(&call(&mut app, i as u16, &train_req(&x, y)));
        let r = fixed.train_step(&x, y).unwrap();
        assert_eq!((a.pred, a.loss_q15), (r.loss.pred, r.loss.loss_q15 as u16));
    }
    assert_eq!(app.model().state_crc32(), fixed.state_crc32());
    expect_ok(&call(&mut app, 50, &Request::Save));

    // Another robot's model: 10 inputs, 12-5 hidden, 4 classes.
    let other = mlp_blob(&[10, 12, 5, 4], 9);
    expect_ok(&upload(&mut app, &other));
    let info = hello(&mut app, 2, 100);
    assert_eq!((info.input_len, info.classes), (10, 4));
    assert_eq!(info.model_ram, Shaped::RAM_BYTES as u32);
    let x8 = [1i8; 8];
    expect_err(
        &call(&mut app, 100, &train_req(&x8, 0)),
        ErrorCode::BadLength,
        9,
    );
    let x10 = [3i8; 10];
    expect_ack(&call(&mut app, 100, &train_req(&x10, 3)));
    expect_err(
        &call(&mut app, 101, &train_req(&x10, 4)),
        ErrorCode::BadLabel,
        4,
    );
    match resp(&call(&mut app, 7, &Request::Infer { features: &x10 })) {
        Response::Prediction { scores_q15, .. } => assert_eq!(scores_q15.len(), 4),
        other => panic!("{other:?}"),
    }
    // Download gives a blob of the new shape; restore brings back the saved 8-input model.
    match resp(&call(
        &mut app,
        8,
        &Request::Download {
            offset: 0,
            max_len: 512,
        },
    )) {
        Response::DownloadData { total_len, .. } => {
            assert_eq!(total_len as usize, other.len())
        }
        r => panic!("{r:?}"),
    }
    expect_ok(&call(&mut app, 9, &Request::Restore));
    let info = hello(&mut app, 10, 0);
    assert_eq!((info.input_len, info.classes), (8, 3));
    assert_eq!(info.model_hash, fixed.state_crc32());
    expect_ok(&call(&mut app, 11, &Request::ResetPretrained));
    assert_eq!(hello(&mut app, 12, 0).model_hash, reference.state_crc32());
}

#[test]
fn shaped_model_refuses_blobs_over_its_capacity_with_a_detail_per_limit() {
    let mut m = Box::new(Shaped::new());
    let mut app = App::new(&mut *m, MemTransport::default(), fresh_flash(), cfg()).unwrap();
    let before = hello(&mut app, 1, 0);
    let mut relu_layer = mlp_blob(&[8, 6, 3], 2);
    relu_layer[40 + 24] = 6; // layer 1 becomes a stand-alone ReLU: not an MLP for this firmware
    let n = relu_layer.len() - 4;
    let crc = odt_core::blob::crc32(&relu_layer[..n]);
    relu_layer[n..].copy_from_slice(&crc.to_le_bytes());
    let cases: [(Vec<u8>, u16); 6] = [
        (relu_layer, 10),
        (mlp_blob(&[17, 4, 3], 1), 11),      // inputs
        (mlp_blob(&[8, 13, 3], 1), 12),      // width
        (mlp_blob(&[8, 6, 7], 1), 13),       // classes
        (mlp_blob(&[8, 4, 4, 4, 3], 1), 14), // depth
        (mlp_blob(&[16, 12, 12, 6], 1), 15), // weights: 408 > 400
    ];
    for (blob, detail) in &cases {
        expect_err(&upload(&mut app, blob), ErrorCode::BadModel, *detail);
        let info = hello(&mut app, 2, 0);
        assert_eq!(
            (info.input_len, info.classes, info.model_hash),
            (before.input_len, before.classes, before.model_hash),
            "detail {detail}: the model is unchanged"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Fragmented training samples (TRAIN_FRAG, docs/protocol.md §2.1).

odt_model! {
    /// 50 inputs: four fragment units (16, 16, 16, 2).
    pub struct Wide {
        input: 50,
        batch: 1,
        weights: i8,
        budget: 8192,
        layers: { fc1: Dense<50, 6, true>, fc2: Dense<6, 3, false> }
    }
}

type WideApp<'a> = App<'a, MemTransport, MemFlash, B, 64>;

fn wide_model() -> Box<Wide> {
    let mut m = Box::new(Wide::new());
    m.init_random(5);
    m
}

/// The application with the `Wide` model (nothing in flash: the model stays as given).
fn boot_wide(model: &mut Wide) -> WideApp<'_> {
    App::new(model, MemTransport::default(), MemFlash::new(&[]), cfg()).unwrap()
}

fn wide_sample(i: usize) -> (Vec<i8>, u8) {
    let x: Vec<i8> = (0..50)
        .map(|k| (((i * 37 + k * 13) % 240) as i32 - 120) as i8)
        .collect();
    (x, ((i * 5) % 3) as u8)
}

fn frag<'a>(x: &'a [i8], label: u8, offset: usize, len: usize) -> Request<'a> {
    Request::TrainFrag {
        label,
        total: x.len() as u16,
        offset: offset as u16,
        data: &x[offset..(offset + len).min(x.len())],
    }
}

fn wide_exchange(app: &mut WideApp, bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    app.transport_mut().rx.extend(bytes);
    app.poll();
    let out = std::mem::take(&mut app.transport_mut().tx);
    let mut d = PacketDecoder::new();
    let mut v = vec![];
    for b in out {
        if let Some(r) = d.push(b) {
            let p = r.unwrap().to_vec();
            let seq = decode_response(&p).unwrap().0;
            v.push((seq, p));
        }
    }
    v
}

fn wcall(app: &mut WideApp, seq: u16, r: &Request) -> Vec<u8> {
    let v = wide_exchange(app, &wire(seq, r));
    assert_eq!(v.len(), 1, "one reply per request");
    assert_eq!(v[0].0, seq, "reply echoes the sequence number");
    v[0].1.clone()
}

fn expect_frag_ack(p: &[u8], offset: u16, held: u8) {
    assert_eq!(
        resp(p),
        Response::FragAck {
            offset,
            held: &[held]
        }
    );
}

fn whello(app: &mut WideApp, next: u16) {
    let p = wcall(
        app,
        500,
        &Request::Hello {
            next_train_seq: next,
        },
    );
    assert!(matches!(resp(&p), Response::Info(_)));
}

#[test]
fn input_buffer_must_hold_the_models_inputs() {
    let mut m = Tiny::new();
    let r = App::<_, _, B, 4>::new(&mut m, MemTransport::default(), fresh_flash(), cfg());
    assert!(matches!(
        r,
        Err(InitError::InputBufferTooSmall { need: 8, have: 4 })
    ));
    // The shape-from-blob model needs its whole input capacity.
    let mut s = Box::new(Shaped::new());
    let r = App::<_, _, B, 15>::new(&mut *s, MemTransport::default(), fresh_flash(), cfg());
    assert!(matches!(
        r,
        Err(InitError::InputBufferTooSmall { need: 16, have: 15 })
    ));
}

#[test]
fn fragments_in_any_order_apply_the_sample_once_like_train() {
    let mut m = wide_model();
    let mut app = boot_wide(&mut m);
    let mut reference = wide_model();
    whello(&mut app, 40);
    let mut acks = vec![];
    for i in 0..6 {
        let (x, y) = wide_sample(i);
        let seq = 40 + i as u16;
        let r = reference.train_step(&x, y).unwrap();
        let want = TrainAck {
            pred: r.loss.pred,
            loss_q15: r.loss.loss_q15 as u16,
            flags: ACK_APPLIED,
        };
        // Units 2, 0 (again), 0+1 in one fragment, then the short last unit completes it.
        expect_frag_ack(&wcall(&mut app, seq, &frag(&x, y, 32, 16)), 32, 0b0100);
        expect_frag_ack(&wcall(&mut app, seq, &frag(&x, y, 0, 16)), 0, 0b0101);
        expect_frag_ack(&wcall(&mut app, seq, &frag(&x, y, 0, 32)), 0, 0b0111);
        expect_frag_ack(&wcall(&mut app, seq, &frag(&x, y, 16, 16)), 16, 0b0111);
        assert_eq!(app.expected_train_seq(), Some(seq));
        let a = expect_ack(&wcall(&mut app, seq, &frag(&x, y, 48, 2)));
        assert_eq!(a, want, "sample {i}");
        assert_eq!(app.expected_train_seq(), Some(seq + 1));
        acks.push(a);
        // Any fragment of it now: the remembered outcome, not applied again.
        let d = expect_ack(&wcall(&mut app, seq, &frag(&x, y, 16, 16)));
        assert_eq!(
            d,
            TrainAck {
                flags: ACK_APPLIED | ACK_DUP,
                ..want
            }
        );
        // A TRAIN of it too.
        let d = expect_ack(&wcall(&mut app, seq, &train_req(&x, y)));
        assert_eq!(d.flags, ACK_APPLIED | ACK_DUP);
    }
    // One fragment carrying the whole sample is a TRAIN.
    let (x, y) = wide_sample(6);
    let r = reference.train_step(&x, y).unwrap();
    let a = expect_ack(&wcall(&mut app, 46, &frag(&x, y, 0, 50)));
    assert_eq!((a.pred, a.loss_q15), (r.loss.pred, r.loss.loss_q15 as u16));
    assert_eq!(app.model().state_crc32(), reference.state_crc32());
    let s = app.stats();
    assert_eq!((s.train_steps, s.preq_samples, s.frame_errors), (7, 7, 0));
}

#[test]
fn fragment_session_sequence_and_length_rules() {
    let mut m = wide_model();
    let mut app = boot_wide(&mut m);
    let mut reference = wide_model();
    let (x, y) = wide_sample(0);
    // No session.
    expect_err(
        &wcall(&mut app, 0, &frag(&x, y, 0, 16)),
        ErrorCode::NoSession,
        0,
    );
    whello(&mut app, 0);
    // Wrong total (not the input length): BAD_LENGTH with the payload length, counted, nothing
    // consumed or kept.
    let short = &x[..40];
    expect_err(
        &wcall(&mut app, 0, &frag(short, y, 0, 16)),
        ErrorCode::BadLength,
        21,
    );
    assert_eq!(app.stats().frame_errors, 1);
    // Bad geometry is refused by the decoder: BAD_LENGTH with the payload length.
    let mut p = vec![y, 50, 0, 8, 0];
    p.extend([1u8; 16]);
    let mut pkt = vec![0u8; p.len() + 8];
    let n = odt_proto::Packet {
        version: 1,
        msg_type: odt_proto::msg_type::TRAIN_FRAG,
        seq: 0,
        payload: &p,
    }
    .encode(&mut pkt)
    .unwrap();
    let mut fr = vec![0u8; MAX_FRAME];
    let k = odt_proto::encode_frame(&pkt[..n], &mut fr).unwrap();
    let v = wide_exchange(&mut app, &fr[..k]);
    expect_err(&v[0].1, ErrorCode::BadLength, 21);
    assert_eq!(app.stats().frame_errors, 2);
    assert_eq!(app.expected_train_seq(), Some(0));
    // A later sample's fragment: OUT_OF_ORDER, not kept.
    let (x1, y1) = wide_sample(1);
    expect_err(
        &wcall(&mut app, 1, &frag(&x1, y1, 0, 16)),
        ErrorCode::OutOfOrder,
        0,
    );
    // Assembly; another label under the same number starts over.
    expect_frag_ack(&wcall(&mut app, 0, &frag(&x, y, 0, 16)), 0, 0b0001);
    let other = (y + 1) % 3;
    expect_frag_ack(&wcall(&mut app, 0, &frag(&x, other, 16, 16)), 16, 0b0010);
    expect_frag_ack(&wcall(&mut app, 0, &frag(&x, y, 32, 16)), 32, 0b0100);
    // HELLO (even one resuming the session) discards the partial sample.
    whello(&mut app, 0);
    assert_eq!(app.expected_train_seq(), Some(0));
    expect_frag_ack(&wcall(&mut app, 0, &frag(&x, y, 48, 2)), 48, 0b1000);
    // A TRAIN of the expected sample applies it whole; its fragments are duplicates after.
    let r = reference.train_step(&x, y).unwrap();
    let a = expect_ack(&wcall(&mut app, 0, &train_req(&x, y)));
    assert_eq!((a.pred, a.loss_q15), (r.loss.pred, r.loss.loss_q15 as u16));
    let d = expect_ack(&wcall(&mut app, 0, &frag(&x, y, 0, 16)));
    assert_eq!(d.flags & ACK_DUP, ACK_DUP);
    // The partial sample of seq 1 is not left over from seq 0: units start empty.
    expect_frag_ack(&wcall(&mut app, 1, &frag(&x1, y1, 0, 32)), 0, 0b0011);
    // A failed model replacement keeps it (nothing in this flash to reset to).
    expect_err(
        &wcall(&mut app, 501, &Request::ResetPretrained),
        ErrorCode::BadModel,
        1,
    );
    let r1 = reference.train_step(&x1, y1).unwrap();
    let a = expect_ack(&wcall(&mut app, 1, &frag(&x1, y1, 32, 18)));
    assert_eq!(
        (a.pred, a.loss_q15),
        (r1.loss.pred, r1.loss.loss_q15 as u16)
    );
    let (x2, _) = wide_sample(2);
    expect_err(
        &wcall(&mut app, 2, &frag(&x2, 3, 16, 16)),
        ErrorCode::BadLabel,
        3,
    );
    assert_eq!(app.expected_train_seq(), Some(3));
    let d = expect_ack(&wcall(&mut app, 2, &frag(&x2, 0, 0, 16)));
    assert_eq!((d.pred, d.flags), (PRED_UNKNOWN, ACK_DUP));
    assert_eq!(app.model().state_crc32(), reference.state_crc32());
    assert_eq!(app.stats().train_steps, 2);
    // A model replacement (here: the same weights uploaded) discards a partial sample.
    let (x3, y3) = wide_sample(3);
    expect_frag_ack(&wcall(&mut app, 3, &frag(&x3, y3, 0, 16)), 0, 0b0001);
    let mut blob = vec![0u8; Wide::BLOB_LEN];
    let n = app.model().save_blob(&mut blob).unwrap();
    blob.truncate(n);
    let crc32 = odt_core::blob::crc32(&blob);
    let begin = Request::UploadBegin {
        total_len: n as u32,
        crc32,
    };
    expect_ok(&wcall(&mut app, 502, &begin));
    for (k, c) in blob.chunks(256).enumerate() {
        let chunk = Request::UploadChunk {
            offset: (k * 256) as u32,
            data: c,
        };
        expect_ok(&wcall(&mut app, 503, &chunk));
    }
    expect_ok(&wcall(&mut app, 504, &Request::UploadEnd));
    expect_frag_ack(&wcall(&mut app, 3, &frag(&x3, y3, 16, 16)), 16, 0b0010);
}

/// A host sending each sample as fragments of random sizes, in random order, with duplicates,
/// stray fragments of the next sample, the odd whole `TRAIN` and `HELLO`, over a channel that
/// loses, duplicates, reorders and corrupts frames both ways: every sample is applied exactly
/// once, in order.
fn fragments_exactly_once(seed: u64, loss: u32, n: usize) {
    let mut m = wide_model();
    let mut app = boot_wide(&mut m);
    let mut rng = Lcg(seed);
    let first: u16 = 65530; // across the wrap
    let samples: Vec<_> = (0..n).map(wide_sample).collect();
    let units = odt_proto::frag_units(50);
    let mut acked = vec![None::<TrainAck>; n];
    let mut base = 0usize;
    let mut held = 0u32; // the host's view of the base sample's units
    let mut session = false;
    let mut rounds = 0;
    while base < n {
        rounds += 1;
        assert!(rounds < 20_000, "no progress");
        let seq = first.wrapping_add(base as u16);
        let (x, y) = &samples[base];
        let mut out = vec![];
        if !session || rng.chance(30) {
            out.push(wire(
                7,
                &Request::Hello {
                    next_train_seq: seq,
                },
            ));
        }
        let size = FRAG_UNIT_T * (1 + rng.next() as usize % 4);
        let mut frags = vec![];
        let mut u = 0;
        while u < units {
            let k = size / FRAG_UNIT_T;
            let missing = (u..(u + k).min(units)).any(|j| held & (1 << j) == 0);
            if missing || rng.chance(100) {
                frags.push(wire(seq, &frag(x, *y, u * FRAG_UNIT_T, size)));
            }
            u += k;
        }
        for _ in 0..frags.len() {
            let i = rng.next() as usize % frags.len();
            let j = rng.next() as usize % frags.len();
            frags.swap(i, j);
        }
        out.extend(frags);
        if rng.chance(80) {
            out.push(wire(seq, &train_req(x, *y)));
        }
        if base + 1 < n && rng.chance(300) {
            let (x1, y1) = &samples[base + 1];
            let seq1 = seq.wrapping_add(1);
            for u in 0..units {
                out.push(wire(seq1, &frag(x1, *y1, u * FRAG_UNIT_T, FRAG_UNIT_T)));
            }
        }
        let bytes: Vec<u8> = channel(out, &mut rng, loss).concat();
        app.transport_mut().rx.extend(bytes);
        app.poll();
        let back = std::mem::take(&mut app.transport_mut().tx);
        for f in channel(split_frames(&back), &mut rng, loss) {
            let mut d = PacketDecoder::new();
            for &b in &f {
                let Some(Ok(p)) = d.push(b) else { continue };
                let Ok((s, r)) = decode_response(p) else {
                    continue;
                };
                match r {
                    Response::Info(_) => session = true,
                    Response::FragAck { held: h, .. } if s == seq => {
                        held = h.first().copied().unwrap_or(0) as u32;
                    }
                    Response::TrainAck(a) => {
                        let i = s.wrapping_sub(first) as usize;
                        if i < n && acked[i].is_none_or(|o| o.flags & ACK_DUP != 0) {
                            acked[i] = Some(a);
                        }
                    }
                    Response::Error(e) if e.code == ErrorCode::NoSession => session = false,
                    _ => {}
                }
            }
        }
        if rng.chance(50) {
            held = 0; // forget: resending what is held is harmless
        }
        while base < n && acked[base].is_some() {
            base += 1;
            held = 0;
        }
    }
    let mut reference = wide_model();
    for (i, (x, y)) in samples.iter().enumerate() {
        let r = reference.train_step(x, *y).unwrap();
        let a = acked[i].unwrap();
        if a.pred != PRED_UNKNOWN {
            assert_eq!(
                (a.pred, a.loss_q15),
                (r.loss.pred, r.loss.loss_q15 as u16),
                "sample {i}"
            );
        }
    }
    assert_eq!(app.model().state_crc32(), reference.state_crc32());
    assert_eq!(app.model().counters().steps as usize, n);
}

const FRAG_UNIT_T: usize = odt_proto::FRAG_UNIT;

#[test]
fn fragments_clean_and_lossy_channels() {
    fragments_exactly_once(1, 0, 30);
    for seed in 0..10 {
        fragments_exactly_once(seed, 200, 30);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn fragment_orders_losses_and_duplicates_apply_each_sample_once(
        seed in any::<u64>(), loss in 0u32..500) {
        fragments_exactly_once(seed, loss, 25);
    }
}

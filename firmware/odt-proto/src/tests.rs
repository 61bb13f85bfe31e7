//! Message-level tests: round trips of every message, error classification, corruption.

use super::*;
use proptest::prelude::*;

fn wire<M: Message>(seq: u16, m: &M) -> Vec<u8> {
    let mut p = [0u8; MAX_PACKET];
    let mut f = [0u8; MAX_FRAME];
    let n = encode_message(seq, m, &mut p, &mut f).unwrap();
    f[..n].to_vec()
}

/// Feed bytes to a fresh decoder; collect every completed frame.
fn frames(bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut d = PacketDecoder::new();
    bytes
        .iter()
        .filter_map(|&b| d.push(b).map(|r| r.map(|p| p.to_vec())))
        .collect()
}

fn one_request(bytes: &[u8]) -> Result<(u16, Vec<u8>), RxError> {
    let f = frames(bytes);
    assert_eq!(f.len(), 1, "{f:?}");
    let p = f[0].clone()?;
    let seq = decode_request(&p)?.0;
    Ok((seq, p))
}

fn requests<'a>(f: &'a [i8], modes: &'a [u8], data: &'a [u8]) -> Vec<Request<'a>> {
    vec![
        Request::Hello {
            next_train_seq: 0xFFFE,
        },
        Request::Train {
            label: 3,
            features: f,
        },
        Request::Infer { features: f },
        Request::Stats,
        Request::SetParams(SetParams {
            enabled: 1,
            lr_m: 20000,
            lr_e: -20,
            batch: 4,
            topk_min: 0xFF,
            modes,
            seed: 0xDEAD_BEEF,
        }),
        Request::Save,
        Request::Restore,
        Request::ResetPretrained,
        Request::UploadBegin {
            total_len: 10480,
            crc32: 0x1234_5678,
        },
        Request::UploadChunk { offset: 512, data },
        Request::UploadEnd,
        Request::Download {
            offset: 1024,
            max_len: 512,
        },
        Request::TrainFrag {
            label: 2,
            total: f.len() as u16,
            offset: 16,
            data: &f[16..48],
        },
        Request::TrainFrag {
            label: 2,
            total: f.len() as u16,
            offset: 96,
            data: &f[96..],
        },
    ]
}

fn responses<'a>(scores: &'a [u16], data: &'a [u8]) -> Vec<Response<'a>> {
    vec![
        Response::Info(Info {
            protocol_version: 1,
            firmware_version: 0x0001_0203,
            model_id: 7,
            model_hash: 0xCAFE_F00D,
            input_len: 102,
            classes: 5,
            batch_capacity: 1,
            model_ram: 30000,
            train_steps: 1,
            boot_count: 2,
            next_train_seq: 3,
        }),
        Response::TrainAck(TrainAck {
            pred: 4,
            loss_q15: 32768,
            flags: ACK_DUP | ACK_APPLIED,
        }),
        Response::Prediction {
            class: 1,
            scores_q15: Scores::U16(scores),
        },
        Response::Stats(Stats {
            train_steps: 1,
            diverged: 1,
            training_enabled: 1,
            ..Default::default()
        }),
        Response::Ok,
        Response::DownloadData {
            total_len: 10480,
            offset: 0,
            data,
        },
        Response::FragAck {
            offset: 32,
            held: &[0b0101_0011],
        },
        Response::FragAck {
            offset: 0,
            held: &[0xFF; MAX_FRAG_BITMAP],
        },
        Response::Error(ErrorMsg::new(ErrorCode::OutOfOrder, 17)),
    ]
}

#[test]
fn every_message_round_trips() {
    let f: Vec<i8> = (-51..51).collect();
    let data: Vec<u8> = (0..512).map(|i| i as u8).collect();
    for r in requests(&f, &[0, 1, 2], &data) {
        let w = wire(42, &r);
        let fr = frames(&w);
        let p = fr[0].as_ref().unwrap();
        assert_eq!(decode_request(p), Ok((42, r)), "{r:?}");
        // A request is not a response.
        assert!(matches!(
            decode_response(p),
            Err(RxError::UnknownType { seq: 42, .. })
        ));
    }
    for r in responses(&[100, 32768, 0], &data) {
        let w = wire(9, &r);
        let fr = frames(&w);
        let p = fr[0].as_ref().unwrap();
        assert_eq!(decode_response(p), Ok((9, r)), "{r:?}");
        assert!(matches!(
            decode_request(p),
            Err(RxError::UnknownType { seq: 9, .. })
        ));
    }
}

#[test]
fn classification_order() {
    // Version is checked after the CRC, before the type.
    let mut pkt = [0u8; 16];
    let p = Packet {
        version: 2,
        msg_type: 0x55,
        seq: 5,
        payload: &[1],
    };
    let n = p.encode(&mut pkt).unwrap();
    assert_eq!(
        decode_request(&pkt[..n]),
        Err(RxError::BadVersion { seq: 5, version: 2 })
    );
    let p = Packet {
        version: 1,
        msg_type: 0x55,
        seq: 5,
        payload: &[1],
    };
    let n = p.encode(&mut pkt).unwrap();
    assert_eq!(
        decode_request(&pkt[..n]),
        Err(RxError::UnknownType {
            seq: 5,
            msg_type: 0x55
        })
    );
    let p = Packet {
        version: 1,
        msg_type: msg_type::HELLO,
        seq: 5,
        payload: &[1],
    };
    let n = p.encode(&mut pkt).unwrap();
    let e = decode_request(&pkt[..n]).unwrap_err();
    assert_eq!(e, RxError::BadLength { seq: 5, len: 1 });
    assert_eq!(e.to_error(), ErrorMsg::new(ErrorCode::BadLength, 1));
    assert_eq!(e.seq(), 5);
    let e = RxError::Frame(FrameError::Crc);
    assert_eq!(
        (e.seq(), e.to_error()),
        (SEQ_NONE, ErrorMsg::new(ErrorCode::BadFrame, 2))
    );
}

#[test]
fn payload_length_rules() {
    use msg_type as t;
    let bad = |ty, p: &[u8]| Request::decode(ty, p) == Err(DecodeError::BadLength(p.len() as u16));
    assert!(bad(t::TRAIN, &[]));
    assert!(Request::decode(t::INFER, &[]).is_ok());
    assert!(bad(t::STATS, &[0]));
    assert!(bad(t::SET_PARAMS, &[1, 0, 0x40, 0, 1, 0xFF]));
    assert!(bad(
        t::SET_PARAMS,
        &[1, 0, 0x40, 0, 1, 0xFF, 2, 2, 0, 0, 0, 0]
    ));
    assert!(Request::decode(t::SET_PARAMS, &[1, 0, 0x40, 0, 1, 0xFF, 1, 2, 0, 0, 0, 0]).is_ok());
    assert!(Request::decode(t::UPLOAD_CHUNK, &[0; 4 + MAX_CHUNK]).is_ok());
    assert!(bad(t::UPLOAD_CHUNK, &[0; 5 + MAX_CHUNK]));
    assert!(bad(t::UPLOAD_CHUNK, &[0; 3]));
    assert!(bad(t::DOWNLOAD, &[0; 5]));
    assert!(bad(t::UPLOAD_BEGIN, &[0; 9]));
    assert!(Response::decode(t::PREDICTION, &[0, 2, 1, 0, 2, 0]).is_ok());
    assert_eq!(
        Response::decode(t::PREDICTION, &[0, 2, 1, 0, 2]),
        Err(DecodeError::BadLength(5))
    );
    assert_eq!(
        Response::decode(t::ERROR, &[1, 2]),
        Err(DecodeError::BadLength(2))
    );
    assert_eq!(
        Response::decode(t::HELLO, &[]),
        Err(DecodeError::UnknownType(t::HELLO))
    );
}

#[test]
fn fragment_geometry() {
    use msg_type as t;
    assert_eq!(frag_units(102), 7);
    assert_eq!(frag_units(96), 6);
    assert_eq!(frag_bitmap_len(102), 1);
    assert_eq!(frag_bitmap_len(128), 1);
    assert_eq!(frag_bitmap_len(129), 2);
    assert_eq!(frag_bitmap_len(0), 1);
    assert_eq!(frag_bitmap_len(4096), MAX_FRAG_BITMAP);
    // Whole units; only the last may be short.
    assert!(frag_geometry_ok(102, 0, 16));
    assert!(frag_geometry_ok(102, 0, 102));
    assert!(frag_geometry_ok(102, 96, 6));
    assert!(frag_geometry_ok(102, 64, 38));
    assert!(!frag_geometry_ok(102, 96, 5)); // does not end the sample
    assert!(!frag_geometry_ok(102, 96, 7)); // past the end
    assert!(!frag_geometry_ok(102, 8, 16)); // misaligned
    assert!(!frag_geometry_ok(102, 0, 15));
    assert!(!frag_geometry_ok(102, 0, 0));
    assert!(!frag_geometry_ok(0, 0, 1));
    assert!(!frag_geometry_ok(4097, 4096, 1)); // bitmap too long
    let frag = |total: u16, offset: u16, n: usize| {
        let mut p = vec![3u8];
        p.extend(total.to_le_bytes());
        p.extend(offset.to_le_bytes());
        p.extend(vec![0x80u8; n]);
        p
    };
    let bad =
        |p: &[u8]| Request::decode(t::TRAIN_FRAG, p) == Err(DecodeError::BadLength(p.len() as u16));
    assert!(bad(&frag(102, 0, 0)));
    assert!(bad(&frag(102, 0, 0)[..4]));
    assert!(bad(&frag(102, 8, 16)));
    assert!(bad(&frag(102, 96, 16)));
    assert!(bad(&frag(20, 0, 17)));
    assert_eq!(
        Request::decode(t::TRAIN_FRAG, &frag(102, 96, 6)),
        Ok(Request::TrainFrag {
            label: 3,
            total: 102,
            offset: 96,
            data: &[-128; 6]
        })
    );
    // FRAG_ACK: offset and 1 to MAX_FRAG_BITMAP bitmap bytes.
    assert_eq!(
        Response::decode(t::FRAG_ACK, &[0, 0]),
        Err(DecodeError::BadLength(2))
    );
    assert_eq!(
        Response::decode(t::FRAG_ACK, &[0; 3 + MAX_FRAG_BITMAP]),
        Err(DecodeError::BadLength(3 + MAX_FRAG_BITMAP as u16))
    );
    assert_eq!(
        Response::decode(t::FRAG_ACK, &[16, 0, 0x7F]),
        Ok(Response::FragAck {
            offset: 16,
            held: &[0x7F]
        })
    );
    let mut p = [0u8; MAX_PACKET];
    let r = Response::FragAck {
        offset: 0,
        held: &[],
    };
    assert_eq!(encode_packet(0, &r, &mut p), Err(EncodeError::FieldTooLong));
    assert_eq!(msg_type::name(t::TRAIN_FRAG), Some("TRAIN_FRAG"));
    assert_eq!(msg_type::name(t::FRAG_ACK), Some("FRAG_ACK"));
}

/// A 16-feature fragment costs 31 bytes on the wire, its `FRAG_ACK` (102 features) 13.
#[test]
fn fragment_costs() {
    let f = [1i8; 16];
    let r = Request::TrainFrag {
        label: 1,
        total: 102,
        offset: 16,
        data: &f,
    };
    assert_eq!(wire(1, &r).len(), 31);
    let a = Response::FragAck {
        offset: 16,
        held: &[0b11],
    };
    assert_eq!(wire(1, &a).len(), 13);
}

#[test]
fn encoder_limits() {
    let data = [0u8; MAX_CHUNK + 1];
    let mut p = [0u8; MAX_PACKET];
    let r = Request::UploadChunk {
        offset: 0,
        data: &data,
    };
    assert_eq!(encode_packet(0, &r, &mut p), Err(EncodeError::FieldTooLong));
    let f = [0i8; MAX_PAYLOAD];
    let r = Request::Train {
        label: 0,
        features: &f,
    };
    assert_eq!(
        encode_packet(0, &r, &mut p),
        Err(EncodeError::PayloadTooLong)
    );
    let r = Request::Infer { features: &f };
    assert!(encode_packet(0, &r, &mut p).is_ok());
    assert_eq!(
        encode_packet(0, &r, &mut p[..100]),
        Err(EncodeError::BufferTooSmall)
    );
    let s = [0u16; 256];
    let r = Response::Prediction {
        class: 0,
        scores_q15: Scores::U16(&s),
    };
    assert_eq!(encode_packet(0, &r, &mut p), Err(EncodeError::FieldTooLong));
    let mut fr = [0u8; 10];
    assert_eq!(
        encode_message(0, &Request::Stats, &mut p, &mut fr[..9]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(encode_message(0, &Request::Stats, &mut p, &mut fr), Ok(10));
}

#[test]
fn scores_forms_agree() {
    let a = Scores::Q15(&[-5, 32768, 70000]);
    let b = Scores::U16(&[0, 32768, 65535]);
    let c = Scores::Wire(&[0, 0, 0, 0x80, 0xFF, 0xFF]);
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_ne!(a, Scores::U16(&[0, 32768]));
    assert!(Scores::Wire(&[]).is_empty());
}

#[test]
fn error_codes_round_trip() {
    for c in 0..=255u8 {
        assert_eq!(ErrorCode::from_u8(c).to_u8(), c);
    }
    assert_eq!(ErrorCode::from_u8(11).name(), "BAD_LABEL");
    assert_eq!(msg_type::name(0x84), Some("STATS"));
    assert_eq!(msg_type::name(0x10), None);
}

#[test]
fn train_sample_costs_111_bytes_for_100_features() {
    let f = [1i8; 100];
    assert_eq!(
        wire(
            1,
            &Request::Train {
                label: 1,
                features: &f
            }
        )
        .len(),
        111
    );
}

fn arb_request() -> impl Strategy<Value = (u16, u8, Vec<u8>, u32, u16)> {
    (
        any::<u16>(),
        0u8..13,
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<u32>(),
        any::<u16>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip((seq, which, bytes, x, y) in arb_request()) {
        let f = as_i8_vec(&bytes);
        let modes: Vec<u8> = bytes.iter().take(16).copied().collect();
        let chunk = &bytes[..bytes.len().min(MAX_CHUNK)];
        let r = match which {
            0 => Request::Hello { next_train_seq: y },
            1 => Request::Train { label: x as u8, features: &f },
            2 => Request::Infer { features: &f },
            3 => Request::SetParams(SetParams {
                enabled: x as u8, lr_m: y, lr_e: (x >> 8) as i8, batch: (x >> 16) as u8,
                topk_min: (x >> 24) as u8, modes: &modes, seed: x ^ 0x5555 }),
            4 => Request::UploadBegin { total_len: x, crc32: !x },
            5 => Request::UploadChunk { offset: x, data: chunk },
            6 => Request::Download { offset: x, max_len: y },
            7 => Request::Stats,
            8 => Request::Save,
            9 => Request::Restore,
            10 => Request::ResetPretrained,
            11 => Request::UploadEnd,
            _ => {
                // A fragment of whole units of a sample of `total` features.
                let total = 1 + y as usize % 1023;
                let start = (x as usize % frag_units(total)) * FRAG_UNIT;
                let room = total - start;
                let len = if f.len() >= room { room } else { f.len() / FRAG_UNIT * FRAG_UNIT };
                if len == 0 {
                    Request::Stats
                } else {
                    Request::TrainFrag {
                        label: x as u8, total: total as u16, offset: start as u16, data: &f[..len],
                    }
                }
            }
        };
        let w = wire(seq, &r);
        prop_assert!(w.len() <= MAX_FRAME);
        prop_assert_eq!(w.iter().filter(|&&b| b == 0).count(), 1);
        let fr = frames(&w);
        let p = fr[0].as_ref().unwrap();
        prop_assert_eq!(decode_request(p), Ok((seq, r)));
    }

    #[test]
    fn responses_round_trip(seq in any::<u16>(), which in 0u8..8, x in any::<u32>(),
                            bytes in proptest::collection::vec(any::<u8>(), 0..=MAX_CHUNK)) {
        let scores: Vec<u16> = bytes.iter().take(255).map(|&b| (b as u16) << 7).collect();
        let r = match which {
            0 => Response::Info(Info { model_id: x, next_train_seq: x as u16, classes: 5, ..Default::default() }),
            1 => Response::TrainAck(TrainAck { pred: x as u8, loss_q15: (x >> 8) as u16, flags: (x >> 24) as u8 }),
            2 => Response::Prediction { class: x as u8, scores_q15: Scores::U16(&scores) },
            3 => Response::Stats(Stats { loss_ema_q15: x, frame_errors: !x, ..Default::default() }),
            4 => Response::Ok,
            5 => Response::DownloadData { total_len: x, offset: !x, data: &bytes },
            6 if !bytes.is_empty() => Response::FragAck {
                offset: x as u16, held: &bytes[..bytes.len().min(MAX_FRAG_BITMAP)] },
            6 => Response::Ok,
            _ => Response::Error(ErrorMsg::new(ErrorCode::from_u8(x as u8), (x >> 8) as u16)),
        };
        let w = wire(seq, &r);
        let fr = frames(&w);
        let p = fr[0].as_ref().unwrap();
        prop_assert_eq!(decode_response(p), Ok((seq, r)));
    }

    /// Corrupt one byte of a frame (possibly turning it into, or out of, a delimiter), follow it
    /// by two good frames: nothing but the good packet is ever accepted, and the decoder has
    /// resynchronised by the last frame (the first good one may be swallowed when the corrupted
    /// frame's delimiter was hit).
    #[test]
    fn any_corrupted_byte_is_detected_or_resyncs(
        seq in any::<u16>(), label in any::<u8>(),
        feats in proptest::collection::vec(any::<u8>(), 0..300),
        at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let f = as_i8_vec(&feats);
        let mut bytes = wire(seq, &Request::Train { label, features: &f });
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let good = Request::Hello { next_train_seq: 9 };
        let gw = wire(seq.wrapping_add(1), &good);
        bytes.extend(&gw);
        bytes.extend(&gw);
        let out = frames(&bytes);
        let accepted: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok())
            .filter_map(|p| decode_request(p).ok()).collect();
        prop_assert!(!accepted.is_empty());
        for a in &accepted {
            prop_assert_eq!(*a, (seq.wrapping_add(1), good), "corruption at {} not detected", i);
        }
        let last = out.last().unwrap().as_ref().unwrap();
        prop_assert_eq!(decode_request(last), Ok((seq.wrapping_add(1), good)));
    }

    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let mut d = PacketDecoder::new();
        for b in bytes {
            if let Some(Ok(p)) = d.push(b) {
                let _ = decode_request(p);
                let _ = decode_response(p);
            }
        }
    }
}

fn as_i8_vec(b: &[u8]) -> Vec<i8> {
    b.iter().map(|&v| v as i8).collect()
}

#[test]
fn one_request_helper_reports_errors() {
    let mut w = wire(3, &Request::Stats);
    assert_eq!(one_request(&w).unwrap().0, 3);
    w[2] ^= 0x40;
    assert!(one_request(&w).is_err());
}

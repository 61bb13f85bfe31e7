//! Golden frames shared by `examples/gen_golden_frames.rs` (writes `golden/frames.json`) and
//! `tests/golden.rs` (checks the file). Schema: `golden/README.md`.
#![allow(dead_code)]

use odt_proto::{
    cobs, decode_request, encode_frame, encode_message, msg_type, ErrorCode, ErrorMsg, Info,
    Message, Packet, PacketDecoder, Request, Response, RxError, Scores, SetParams, Stats, TrainAck,
    ACK_APPLIED, ACK_DUP, MAX_FRAME, MAX_PACKET, PRED_UNKNOWN, SEQ_NONE,
};
use serde_json::{json, Map, Value};

/// Where the file lives.
pub const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/frames.json");

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Decoded fields of a request, named as in `docs/protocol.md`.
pub fn request_fields(r: &Request) -> Value {
    match *r {
        Request::Hello { next_train_seq } => json!({ "next_train_seq": next_train_seq }),
        Request::Train { label, features } => json!({ "label": label, "features": features }),
        Request::Infer { features } => json!({ "features": features }),
        Request::SetParams(p) => json!({
            "enabled": p.enabled, "lr_m": p.lr_m, "lr_e": p.lr_e, "batch": p.batch,
            "topk_min": p.topk_min, "n_modes": p.modes.len(), "modes": p.modes, "seed": p.seed,
        }),
        Request::UploadBegin { total_len, crc32 } => {
            json!({ "total_len": total_len, "crc32": crc32 })
        }
        Request::UploadChunk { offset, data } => json!({ "offset": offset, "data_hex": hex(data) }),
        Request::Download { offset, max_len } => json!({ "offset": offset, "max_len": max_len }),
        Request::TrainFrag {
            label,
            total,
            offset,
            data,
        } => json!({ "label": label, "total": total, "offset": offset, "features": data }),
        Request::Stats
        | Request::Save
        | Request::Restore
        | Request::ResetPretrained
        | Request::UploadEnd => json!({}),
    }
}

/// Decoded fields of a response, named as in `docs/protocol.md`.
pub fn response_fields(r: &Response) -> Value {
    match *r {
        Response::Info(i) => json!({
            "protocol_version": i.protocol_version, "firmware_version": i.firmware_version,
            "model_id": i.model_id, "model_hash": i.model_hash, "input_len": i.input_len,
            "classes": i.classes, "batch_capacity": i.batch_capacity, "model_ram": i.model_ram,
            "train_steps": i.train_steps, "boot_count": i.boot_count,
            "next_train_seq": i.next_train_seq,
        }),
        Response::TrainAck(a) => {
            json!({ "pred": a.pred, "loss_q15": a.loss_q15, "flags": a.flags })
        }
        Response::Prediction { class, scores_q15 } => json!({
            "class": class, "n": scores_q15.len(), "scores_q15": scores_q15.iter().collect::<Vec<_>>(),
        }),
        Response::Stats(s) => json!({
            "train_steps": s.train_steps, "updates": s.updates, "preq_correct": s.preq_correct,
            "preq_samples": s.preq_samples, "loss_ema_q15": s.loss_ema_q15,
            "forward_saturations": s.forward_saturations, "update_clips": s.update_clips,
            "weight_saturations": s.weight_saturations, "zero_grad_steps": s.zero_grad_steps,
            "frame_errors": s.frame_errors, "training_enabled": s.training_enabled,
            "diverged": s.diverged,
        }),
        Response::Ok => json!({}),
        Response::DownloadData {
            total_len,
            offset,
            data,
        } => {
            json!({ "total_len": total_len, "offset": offset, "data_hex": hex(data) })
        }
        Response::FragAck { offset, held } => json!({ "offset": offset, "held_hex": hex(held) }),
        Response::Error(e) => json!({ "code": e.code.to_u8(), "detail": e.detail }),
    }
}

fn packet_bytes(frame: &[u8]) -> Vec<u8> {
    let mut d = PacketDecoder::new();
    let mut out = None;
    for &b in frame {
        if let Some(r) = d.push(b) {
            out = Some(r.unwrap().to_vec());
        }
    }
    out.unwrap()
}

fn valid<M: Message>(name: &str, seq: u16, m: &M, fields: Value) -> Value {
    let mut p = [0u8; MAX_PACKET];
    let mut f = [0u8; MAX_FRAME];
    let n = encode_message(seq, m, &mut p, &mut f).unwrap();
    let frame = &f[..n];
    let pkt = packet_bytes(frame);
    let t = m.msg_type();
    json!({
        "name": name,
        "message": msg_type::name(t).unwrap(),
        "direction": if t & 0x80 == 0 && t != msg_type::ERROR { "request" } else { "response" },
        "frame_hex": hex(frame),
        "version": pkt[0],
        "type": t,
        "seq": seq,
        "payload_hex": hex(&pkt[4..pkt.len() - 4]),
        "fields": fields,
    })
}

fn req(name: &str, seq: u16, r: Request) -> Value {
    valid(name, seq, &r, request_fields(&r))
}

fn resp(name: &str, seq: u16, r: Response) -> Value {
    valid(name, seq, &r, response_fields(&r))
}

/// A raw packet (any version/type/payload, correct CRC) as a frame.
fn raw_frame(version: u8, t: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; payload.len() + 8];
    Packet {
        version,
        msg_type: t,
        seq,
        payload,
    }
    .encode(&mut p)
    .unwrap();
    cobs_frame(&p)
}

fn cobs_frame(packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; cobs::max_encoded_len(packet.len()) + 1];
    let n = encode_frame(packet, &mut f).unwrap();
    f.truncate(n);
    f
}

fn invalid(name: &str, frame: &[u8]) -> Value {
    // The expected reply is computed by the decoder, and pinned by the `error` string below
    // (hand-written per case and checked against it in the test).
    let mut d = PacketDecoder::new();
    let mut e = None;
    for &b in frame {
        if let Some(r) = d.push(b) {
            e = Some(match r {
                Err(fe) => RxError::Frame(fe),
                Ok(p) => decode_request(p).unwrap_err(),
            });
        }
    }
    let e = e.unwrap();
    let msg = e.to_error();
    let label = match e {
        RxError::Frame(fe) => format!("BAD_FRAME/{}", fe.name()),
        _ => msg.code.name().to_string(),
    };
    json!({
        "name": name,
        "direction": "request",
        "frame_hex": hex(frame),
        "error": label,
        "error_code": msg.code.to_u8(),
        "error_detail": msg.detail,
        "error_seq": e.seq(),
    })
}

fn features(n: usize, k: i32) -> Vec<i8> {
    (0..n as i32)
        .map(|i| ((i * 37 + k) % 256 - 128) as i8)
        .collect()
}

/// A `TRAIN_FRAG` payload with `n` feature bytes (any geometry, for the invalid cases).
fn frag_payload(label: u8, total: u16, offset: u16, n: usize) -> Vec<u8> {
    let mut p = vec![label];
    p.extend(total.to_le_bytes());
    p.extend(offset.to_le_bytes());
    p.extend((0..n).map(|i| (i * 11 + 1) as u8));
    p
}

/// Every golden frame, in file order.
pub fn golden() -> Value {
    let f102 = features(102, 5);
    let f102b = features(102, 128);
    let modes3 = [0u8, 1, 2];
    let chunk: Vec<u8> = (0..512).map(|i| (i % 255 + 1) as u8).collect();
    let chunk_zeros: Vec<u8> = (0..64)
        .map(|i| if i % 3 == 0 { 0 } else { i as u8 })
        .collect();
    let tail: Vec<u8> = (0..240).map(|i| (i * 7) as u8).collect();
    let scores = [3000u16, 25000, 2000, 1768, 1000];

    let mut v = vec![
        req("hello", 0, Request::Hello { next_train_seq: 0 }),
        req(
            "hello_wrapping_seq",
            0xFFFF,
            Request::Hello {
                next_train_seq: 0xFFFE,
            },
        ),
        req(
            "train",
            1,
            Request::Train {
                label: 2,
                features: &f102,
            },
        ),
        req(
            "train_label0",
            2,
            Request::Train {
                label: 0,
                features: &f102b,
            },
        ),
        req("infer", 3, Request::Infer { features: &f102 }),
        req("stats", 4, Request::Stats),
        req(
            "set_params",
            5,
            Request::SetParams(SetParams {
                enabled: 1,
                lr_m: 16384,
                lr_e: -20,
                batch: 1,
                topk_min: 0xFF,
                modes: &modes3,
                seed: 0x2545_F491,
            }),
        ),
        req(
            "set_params_disable_no_modes",
            6,
            Request::SetParams(SetParams {
                enabled: 0,
                lr_m: 32767,
                lr_e: -18,
                batch: 8,
                topk_min: 4,
                modes: &[],
                seed: 0,
            }),
        ),
        req("save", 7, Request::Save),
        req("restore", 8, Request::Restore),
        req("reset_pretrained", 9, Request::ResetPretrained),
        req(
            "upload_begin",
            10,
            Request::UploadBegin {
                total_len: 10480,
                crc32: 0xDEAD_BEEF,
            },
        ),
        req(
            "upload_chunk_full",
            11,
            Request::UploadChunk {
                offset: 512,
                data: &chunk,
            },
        ),
        req(
            "upload_chunk_zeros",
            12,
            Request::UploadChunk {
                offset: 0,
                data: &chunk_zeros,
            },
        ),
        req("upload_end", 13, Request::UploadEnd),
        req(
            "download",
            14,
            Request::Download {
                offset: 10240,
                max_len: 512,
            },
        ),
        req(
            "train_frag_first",
            15,
            Request::TrainFrag {
                label: 2,
                total: 102,
                offset: 0,
                data: &f102[..32],
            },
        ),
        req(
            "train_frag_last_short",
            15,
            Request::TrainFrag {
                label: 2,
                total: 102,
                offset: 96,
                data: &f102[96..],
            },
        ),
        resp(
            "info",
            0,
            Response::Info(Info {
                protocol_version: 1,
                firmware_version: 0x0001_0000,
                model_id: 0x0000_0042,
                model_hash: 0x89AB_CDEF,
                input_len: 102,
                classes: 5,
                batch_capacity: 1,
                model_ram: 29836,
                train_steps: 1000,
                boot_count: 3,
                next_train_seq: 0,
            }),
        ),
        resp(
            "train_ack_applied",
            1,
            Response::TrainAck(TrainAck {
                pred: 2,
                loss_q15: 12345,
                flags: ACK_APPLIED,
            }),
        ),
        resp(
            "train_ack_old_duplicate",
            1,
            Response::TrainAck(TrainAck {
                pred: PRED_UNKNOWN,
                loss_q15: 0,
                flags: ACK_DUP,
            }),
        ),
        resp(
            "prediction",
            3,
            Response::Prediction {
                class: 1,
                scores_q15: Scores::U16(&scores),
            },
        ),
        resp(
            "stats",
            4,
            Response::Stats(Stats {
                train_steps: 1000,
                updates: 1000,
                preq_correct: 812,
                preq_samples: 1000,
                loss_ema_q15: 8000,
                forward_saturations: 17,
                update_clips: 2,
                weight_saturations: 0,
                zero_grad_steps: 5,
                frame_errors: 1,
                training_enabled: 1,
                diverged: 0,
            }),
        ),
        resp("ok", 5, Response::Ok),
        resp(
            "download_data_last_chunk",
            14,
            Response::DownloadData {
                total_len: 10480,
                offset: 10240,
                data: &tail,
            },
        ),
        resp(
            "frag_ack",
            15,
            Response::FragAck {
                offset: 0,
                held: &[0b0000_0011],
            },
        ),
        resp(
            "frag_ack_two_bitmap_bytes",
            16,
            Response::FragAck {
                offset: 128,
                held: &[0b1111_0111, 0b0000_0001],
            },
        ),
        resp(
            "train_ack_completing_fragment",
            15,
            Response::TrainAck(TrainAck {
                pred: 1,
                loss_q15: 20000,
                flags: ACK_APPLIED,
            }),
        ),
        resp(
            "error_out_of_order",
            20,
            Response::Error(ErrorMsg::new(ErrorCode::OutOfOrder, 17)),
        ),
        resp(
            "error_bad_frame_crc",
            SEQ_NONE,
            Response::Error(ErrorMsg::new(ErrorCode::BadFrame, 2)),
        ),
    ];

    // Invalid frames sent to the co-processor, and the ERROR it answers with.
    let mut bad_crc = raw_frame(1, msg_type::STATS, 4, &[]);
    let k = bad_crc.len() - 2;
    bad_crc[k] ^= 0x01;
    let oversized = cobs_frame(&[0x11; MAX_PACKET + 1]);
    v.extend([
        invalid("bad_crc", &bad_crc),
        invalid("bad_cobs", &[0x05, 0x01, 0x04, 0x00]),
        invalid("truncated", &cobs_frame(&[0x01, 0x04, 0x00, 0x00, 0x00])),
        invalid("oversized", &oversized),
        invalid("bad_version", &raw_frame(2, msg_type::STATS, 7, &[])),
        invalid("unknown_type", &raw_frame(1, 0x20, 8, &[])),
        invalid(
            "response_type_sent_to_coprocessor",
            &raw_frame(1, msg_type::OK, 9, &[]),
        ),
        invalid(
            "bad_length_hello",
            &raw_frame(1, msg_type::HELLO, 10, &[0, 0, 0]),
        ),
        invalid(
            "bad_length_set_params_n_modes",
            &raw_frame(
                1,
                msg_type::SET_PARAMS,
                11,
                &[1, 0, 0x40, 0xEC, 1, 0xFF, 3, 2, 2, 0, 0, 0, 0],
            ),
        ),
        invalid(
            "bad_length_upload_chunk",
            &raw_frame(1, msg_type::UPLOAD_CHUNK, 12, &[0x5A; 4 + 513]),
        ),
        invalid(
            "bad_length_train_frag_misaligned",
            &raw_frame(1, msg_type::TRAIN_FRAG, 13, &frag_payload(2, 102, 8, 16)),
        ),
        invalid(
            "bad_length_train_frag_partial_unit",
            &raw_frame(1, msg_type::TRAIN_FRAG, 14, &frag_payload(2, 102, 16, 20)),
        ),
        invalid(
            "bad_length_train_frag_past_end",
            &raw_frame(1, msg_type::TRAIN_FRAG, 15, &frag_payload(2, 102, 96, 16)),
        ),
        invalid(
            "bad_length_train_frag_empty",
            &raw_frame(1, msg_type::TRAIN_FRAG, 16, &frag_payload(2, 102, 0, 0)),
        ),
    ]);
    Value::Array(v)
}

/// Expected `error` label of each invalid frame, written by hand (the test checks the generated
/// file against it, so the decoder's classification is pinned independently).
pub const EXPECTED_ERRORS: &[(&str, &str, u16)] = &[
    ("bad_crc", "BAD_FRAME/CRC", 0xFFFF),
    ("bad_cobs", "BAD_FRAME/COBS", 0xFFFF),
    ("truncated", "BAD_FRAME/TRUNCATED", 0xFFFF),
    ("oversized", "BAD_FRAME/OVERSIZED", 0xFFFF),
    ("bad_version", "BAD_VERSION", 7),
    ("unknown_type", "UNKNOWN_TYPE", 8),
    ("response_type_sent_to_coprocessor", "UNKNOWN_TYPE", 9),
    ("bad_length_hello", "BAD_LENGTH", 10),
    ("bad_length_set_params_n_modes", "BAD_LENGTH", 11),
    ("bad_length_upload_chunk", "BAD_LENGTH", 12),
    ("bad_length_train_frag_misaligned", "BAD_LENGTH", 13),
    ("bad_length_train_frag_partial_unit", "BAD_LENGTH", 14),
    ("bad_length_train_frag_past_end", "BAD_LENGTH", 15),
    ("bad_length_train_frag_empty", "BAD_LENGTH", 16),
];

/// JSON text: objects one key per line, arrays of scalars on one line.
pub fn to_text(v: &Value) -> String {
    let mut s = String::new();
    write_value(&mut s, v, 0);
    s.push('\n');
    s
}

fn write_value(s: &mut String, v: &Value, indent: usize) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Object(m) => write_object(s, m, indent),
        Value::Array(a) if a.iter().any(|x| x.is_object() || x.is_array()) => {
            s.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                s.push_str(&pad(indent + 1));
                write_value(s, x, indent + 1);
                if i + 1 < a.len() {
                    s.push(',');
                }
                s.push('\n');
            }
            s.push_str(&pad(indent));
            s.push(']');
        }
        other => s.push_str(&serde_json::to_string(other).unwrap()),
    }
}

fn write_object(s: &mut String, m: &Map<String, Value>, indent: usize) {
    if m.is_empty() {
        s.push_str("{}");
        return;
    }
    let pad = |n: usize| "  ".repeat(n);
    s.push_str("{\n");
    for (i, (k, x)) in m.iter().enumerate() {
        s.push_str(&pad(indent + 1));
        s.push_str(&serde_json::to_string(k).unwrap());
        s.push_str(": ");
        write_value(s, x, indent + 1);
        if i + 1 < m.len() {
            s.push(',');
        }
        s.push('\n');
    }
    s.push_str(&pad(indent));
    s.push('}');
}

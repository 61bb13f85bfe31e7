//! `golden/frames.json` is up to date, and every frame in it decodes to its listed header and
//! fields (or is rejected with its listed error) and re-encodes to the same bytes.

mod golden_gen;

use golden_gen::{hex, request_fields, response_fields, unhex, EXPECTED_ERRORS};
use odt_proto::{
    decode_request, decode_response, encode_message, FrameError, PacketDecoder, RxError, MAX_FRAME,
    MAX_PACKET,
};
use serde_json::Value;

fn load() -> Vec<Value> {
    let text = std::fs::read_to_string(golden_gen::PATH).expect("golden/frames.json");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn one_frame(bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut d = PacketDecoder::new();
    let mut out = vec![];
    for &b in bytes {
        if let Some(r) = d.push(b) {
            out.push(r.map(|p| p.to_vec()));
        }
    }
    assert_eq!(out.len(), 1, "exactly one frame per entry");
    out.pop().unwrap()
}

#[test]
fn file_is_up_to_date() {
    let text = std::fs::read_to_string(golden_gen::PATH).expect("golden/frames.json");
    let want = golden_gen::to_text(&golden_gen::golden());
    assert!(
        text == want,
        "golden/frames.json is stale: run `cargo run -p odt-proto --example gen_golden_frames`"
    );
}

#[test]
fn valid_frames_decode_to_their_fields_and_reencode() {
    let entries = load();
    let mut seen = std::collections::BTreeSet::new();
    for e in entries.iter().filter(|e| e.get("error").is_none()) {
        let name = e["name"].as_str().unwrap();
        let frame = unhex(e["frame_hex"].as_str().unwrap());
        assert!(frame.len() <= MAX_FRAME, "{name}");
        let pkt = one_frame(&frame).unwrap();
        assert_eq!(pkt[0] as u64, e["version"].as_u64().unwrap(), "{name}");
        assert_eq!(pkt[1] as u64, e["type"].as_u64().unwrap(), "{name}");
        assert_eq!(
            hex(&pkt[4..pkt.len() - 4]),
            e["payload_hex"].as_str().unwrap(),
            "{name}"
        );
        let seq = e["seq"].as_u64().unwrap() as u16;
        let mut p = [0u8; MAX_PACKET];
        let mut f = [0u8; MAX_FRAME];
        let n = if e["direction"] == "request" {
            let (s, r) = decode_request(&pkt).unwrap();
            assert_eq!(s, seq, "{name}");
            assert_eq!(request_fields(&r), e["fields"], "{name}");
            encode_message(s, &r, &mut p, &mut f).unwrap()
        } else {
            let (s, r) = decode_response(&pkt).unwrap();
            assert_eq!(s, seq, "{name}");
            assert_eq!(response_fields(&r), e["fields"], "{name}");
            encode_message(s, &r, &mut p, &mut f).unwrap()
        };
        assert_eq!(&f[..n], &frame[..], "{name} re-encodes differently");
        seen.insert(pkt[1]);
    }
    // Every message type of the doc is covered.
    let all = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x7F, 0x81,
        0x82, 0x83, 0x84, 0x85, 0x8C, 0x8D,
    ];
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), all.to_vec());
}

#[test]
fn invalid_frames_draw_their_errors() {
    let entries = load();
    let bad: Vec<_> = entries
        .iter()
        .filter(|e| e.get("error").is_some())
        .collect();
    assert_eq!(bad.len(), EXPECTED_ERRORS.len());
    for (e, &(name, label, seq)) in bad.iter().zip(EXPECTED_ERRORS) {
        assert_eq!(e["name"], name);
        assert_eq!(e["error"], label, "{name}");
        assert_eq!(e["error_seq"].as_u64().unwrap(), seq as u64, "{name}");
        let frame = unhex(e["frame_hex"].as_str().unwrap());
        let err = match one_frame(&frame) {
            Err(fe) => RxError::Frame(fe),
            Ok(p) => decode_request(&p).unwrap_err(),
        };
        let msg = err.to_error();
        assert_eq!(
            msg.code.to_u8() as u64,
            e["error_code"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            msg.detail as u64,
            e["error_detail"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(err.seq(), seq, "{name}");
    }
}

//! Any byte stream into the co-processor's frame decoder and request parser: no panic, and
//! every complete frame either decodes or is a reported error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odt_proto::{decode_request, PacketDecoder};

fuzz_target!(|data: &[u8]| {
    let mut d = PacketDecoder::new();
    for &b in data {
        if let Some(Ok(packet)) = d.push(b) {
            let _ = decode_request(packet);
        }
    }
});

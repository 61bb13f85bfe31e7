//! Any bytes as a model blob for the firmware's model (`FirmwareMlp`): refused with an error
//! or loaded; never a panic; a refused blob leaves the loaded model unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odt_core::models::FirmwareMlp;
use odt_core::Model;

static SHIPPED: &[u8] = include_bytes!("../../../models/borealtc_mlp.odtm");

fuzz_target!(|data: &[u8]| {
    let mut m = Box::new(FirmwareMlp::new());
    m.load_blob(SHIPPED).expect("shipped model loads");
    let before = m.state_crc32();
    // Mutations of a valid blob reach past the CRC check more often than random bytes: the
    // first byte picks between the raw input and the shipped blob with input bytes patched in.
    let candidate: Vec<u8> = if data.first().is_some_and(|b| b & 1 == 1) && data.len() > 3 {
        let mut v = SHIPPED.to_vec();
        for pair in data[1..].chunks(3) {
            if let [hi, lo, val] = pair {
                let i = ((*hi as usize) << 8 | *lo as usize) % v.len();
                v[i] = *val;
            }
        }
        // Keep the CRC valid so the structural checks run.
        let n = v.len() - 4;
        let crc = odt_core::blob::crc32(&v[..n]);
        v[n..].copy_from_slice(&crc.to_le_bytes());
        v
    } else {
        data.to_vec()
    };
    if m.load_blob(&candidate).is_err() {
        assert_eq!(m.state_crc32(), before, "a refused blob changed the model");
    } else {
        let x = vec![0i8; m.input_len()];
        let _ = m.infer(&x);
    }
});

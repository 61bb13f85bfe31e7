//! End-to-end tests of the `odt-emu` binary over stdio, a pseudo-terminal and TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use odt_core::models::TerrainMlp;
use odt_proto::{
    decode_response, encode_message, ErrorCode, Info, PacketDecoder, Request, Response, Stats,
    TrainAck, ACK_DUP, MAX_FRAME, MAX_PACKET, PRED_UNKNOWN,
};

const EMU: &str = env!("CARGO_BIN_EXE_odt-emu");

fn wire(seq: u16, r: &Request) -> Vec<u8> {
    let mut p = [0u8; MAX_PACKET];
    let mut f = [0u8; MAX_FRAME];
    let n = encode_message(seq, r, &mut p, &mut f).unwrap();
    f[..n].to_vec()
}

/// Every good response packet in `bytes`.
fn packets(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut d = PacketDecoder::new();
    bytes
        .iter()
        .filter_map(|&b| d.push(b).and_then(|r| r.ok()).map(|p| p.to_vec()))
        .collect()
}

fn info(p: &[u8]) -> Info {
    match decode_response(p).unwrap().1 {
        Response::Info(i) => i,
        other => panic!("expected INFO, got {other:?}"),
    }
}

fn sample(i: usize) -> (Vec<i8>, u8) {
    let x = (0..TerrainMlp::INPUT_LEN)
        .map(|k| ((i * 131 + k * 29) % 251) as u8 as i8)
        .collect();
    (x, (i % 5) as u8)
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("odt-emu-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Run the emulator in stdio mode on `input`; returns (exit ok, stdout bytes).
fn stdio_run(args: &[&str], input: &[u8]) -> (bool, Vec<u8>) {
    let mut child = Command::new(EMU)
        .arg("--stdio")
        .arg("--quiet")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (out.status.success(), out.stdout)
}

fn terminate(child: &mut Child, sig: libc::c_int) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "emulator did not exit on signal {sig}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stdio_session_trains_like_the_reference() {
    let n = 30;
    let mut input = wire(
        0,
        &Request::Hello {
            next_train_seq: 500,
        },
    );
    for i in 0..n {
        let (x, y) = sample(i);
        input.extend(wire(
            500 + i as u16,
            &Request::Train {
                label: y,
                features: &x,
            },
        ));
    }
    input.extend(wire(
        1,
        &Request::Hello {
            next_train_seq: 500 + n as u16,
        },
    ));
    input.extend(wire(2, &Request::Stats));
    input.extend(wire(
        3,
        &Request::Download {
            offset: 0,
            max_len: 2000,
        },
    ));
    let (ok, out) = stdio_run(&[], &input);
    assert!(ok, "exit status");
    let ps = packets(&out);
    assert_eq!(ps.len(), n + 4);

    let mut reference = Box::new(TerrainMlp::new());
    reference.init_random(1);
    let i0 = info(&ps[0]);
    assert_eq!(
        (i0.input_len, i0.classes, i0.batch_capacity, i0.boot_count),
        (102, 5, 1, 1)
    );
    assert_eq!(i0.model_hash, reference.state_crc32());
    assert_eq!(i0.next_train_seq, 500);
    for i in 0..n {
        let (x, y) = sample(i);
        let r = reference.train_step(&x, y).unwrap();
        let (seq, resp) = decode_response(&ps[1 + i]).unwrap();
        assert_eq!(seq, 500 + i as u16);
        let Response::TrainAck(a) = resp else {
            panic!("{resp:?}")
        };
        assert_eq!((a.pred, a.loss_q15), (r.loss.pred, r.loss.loss_q15 as u16));
    }
    let i1 = info(&ps[n + 1]);
    assert_eq!(i1.model_hash, reference.state_crc32());
    assert_eq!(i1.train_steps, n as u32);
    let Response::Stats(s) = decode_response(&ps[n + 2]).unwrap().1 else {
        panic!()
    };
    assert_eq!(
        (s.preq_samples, s.train_steps, s.frame_errors),
        (n as u32, n as u32, 0)
    );
    let Response::DownloadData {
        total_len,
        offset,
        data,
    } = decode_response(&ps[n + 3]).unwrap().1
    else {
        panic!()
    };
    assert_eq!(
        (total_len as usize, offset, data.len()),
        (TerrainMlp::BLOB_LEN, 0, 512)
    );
}

#[test]
fn flash_file_keeps_saved_models_and_boot_count_across_runs() {
    let flash = tmp("flash.bin");
    let fs = flash.to_str().unwrap();
    let mut input = wire(0, &Request::Hello { next_train_seq: 0 });
    for i in 0..5 {
        let (x, y) = sample(i);
        input.extend(wire(
            i as u16,
            &Request::Train {
                label: y,
                features: &x,
            },
        ));
    }
    input.extend(wire(9, &Request::Save));
    input.extend(wire(10, &Request::Hello { next_train_seq: 5 }));
    let (ok, out) = stdio_run(&["--flash", fs], &input);
    assert!(ok);
    let ps = packets(&out);
    assert_eq!(decode_response(&ps[6]).unwrap().1, Response::Ok);
    let trained = info(&ps[7]).model_hash;

    let (ok, out) = stdio_run(
        &["--flash", fs],
        &wire(0, &Request::Hello { next_train_seq: 0 }),
    );
    assert!(ok);
    let i = info(&packets(&out)[0]);
    assert_eq!((i.boot_count, i.model_hash, i.train_steps), (2, trained, 0));
    assert_eq!(std::fs::metadata(&flash).unwrap().len(), 102_400);
    let _ = std::fs::remove_file(&flash);
}

#[test]
fn model_argument_sets_the_pretrained_model_and_bad_ones_are_refused() {
    let mut m = Box::new(TerrainMlp::new());
    m.init_random(77);
    let mut blob = vec![0u8; TerrainMlp::BLOB_LEN];
    m.save_blob(&mut blob).unwrap();
    let path = tmp("model.odtm");
    std::fs::write(&path, &blob).unwrap();
    let (ok, out) = stdio_run(
        &["--model", path.to_str().unwrap()],
        &wire(0, &Request::Hello { next_train_seq: 0 }),
    );
    assert!(ok);
    assert_eq!(info(&packets(&out)[0]).model_hash, m.state_crc32());

    blob[100] ^= 1;
    std::fs::write(&path, &blob).unwrap();
    let out = Command::new(EMU)
        .args(["--stdio", "--model", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a valid model blob for this firmware: CRC mismatch"),
        "{err}"
    );
    let _ = std::fs::remove_file(&path);
}

/// A blob of an MLP with these widths (synthetic weights), from a model with room for it.
fn mlp_blob(widths: &[usize], seed: u32) -> Vec<u8> {
    let mut m = Box::new(odt_core::DynMlp::<512, 128, 32, 4, 65536, 1>::new());
    m.init_random_mlp(widths, seed).unwrap();
    let mut b = vec![0u8; 1 << 17];
    let n = m.save_blob(&mut b).unwrap();
    b.truncate(n);
    b
}

#[test]
fn model_over_the_firmware_capacity_is_refused_with_the_reason() {
    for (widths, reason) in [
        (&[300, 16, 4][..], "300 inputs > capacity 256"),
        (&[20, 80, 4], "80 units in a hidden layer > capacity 64"),
        (&[20, 16, 20], "20 classes > capacity 16"),
        (&[20, 8, 8, 8, 8, 4], "5 Dense layers > capacity 4"),
        (&[256, 64, 64, 4], "20736 weights > capacity 16384"),
    ] {
        let path = tmp(&format!("big{}.odtm", widths[0]));
        std::fs::write(&path, mlp_blob(widths, 1)).unwrap();
        let out = Command::new(EMU)
            .args(["--stdio", "--model", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{widths:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "not a valid model blob for this firmware: {reason}"
            )),
            "{widths:?}: {err}"
        );
        assert!(out.stdout.is_empty());
        let _ = std::fs::remove_file(&path);
    }
}

/// The golden training runs of the Python reference (batch 1, the firmware's capacity), replayed
/// over the emulated link: INFO reports the blob's shape, every acknowledgement carries the
/// reference's prediction and loss, and the downloaded model is the reference's final blob.
#[test]
fn golden_runs_of_two_shapes_over_the_link_match_the_python_reference() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../odt-core/golden");
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    for name in ["terrain_i8_all", "terrain_topk", "mlp4_i8_all"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let case: serde_json::Value = serde_json::from_str(&text).unwrap();
        let blob = hex(case["blob_hex"].as_str().unwrap());
        let path = tmp(&format!("{name}.odtm"));
        std::fs::write(&path, &blob).unwrap();
        let c = &case["config"];
        let modes: Vec<u8> = c["modes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m.as_str().unwrap() {
                "frozen" => 0,
                "bias" => 1,
                _ => 2,
            })
            .collect();
        let mut input = wire(0, &Request::Hello { next_train_seq: 0 });
        input.extend(wire(
            1,
            &Request::SetParams(odt_proto::SetParams {
                enabled: 1,
                lr_m: c["lr_m"].as_u64().unwrap() as u16,
                lr_e: c["lr_e"].as_i64().unwrap() as i8,
                batch: c["batch"].as_u64().unwrap() as u8,
                topk_min: c["topk_min"].as_u64().map_or(0xFF, |k| k as u8),
                modes: &modes,
                seed: c["seed"].as_u64().unwrap() as u32,
            }),
        ));
        let steps = case["steps"].as_array().unwrap();
        let xs: Vec<Vec<i8>> = steps
            .iter()
            .map(|st| {
                st["x"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap() as i8)
                    .collect()
            })
            .collect();
        for (i, (st, x)) in steps.iter().zip(&xs).enumerate() {
            input.extend(wire(
                i as u16,
                &Request::Train {
                    label: st["label"].as_u64().unwrap() as u8,
                    features: x,
                },
            ));
        }
        let final_blob = hex(case["final_blob_hex"].as_str().unwrap());
        let chunks = final_blob.len().div_ceil(512);
        for k in 0..chunks {
            input.extend(wire(
                2 + k as u16,
                &Request::Download {
                    offset: (k * 512) as u32,
                    max_len: 512,
                },
            ));
        }
        let (ok, out) = stdio_run(&["--model", path.to_str().unwrap()], &input);
        assert!(ok, "{name}");
        let ps = packets(&out);
        assert_eq!(ps.len(), 2 + steps.len() + chunks, "{name}");
        let i0 = info(&ps[0]);
        let x_len = xs[0].len();
        let classes = steps[0]["logits"].as_array().unwrap().len();
        assert_eq!(
            (i0.input_len as usize, i0.classes as usize),
            (x_len, classes),
            "{name}"
        );
        assert_eq!(
            i0.model_ram as usize,
            odt_core::models::FirmwareMlp::RAM_BYTES
        );
        assert_eq!(decode_response(&ps[1]).unwrap().1, Response::Ok, "{name}");
        for (i, st) in steps.iter().enumerate() {
            let Response::TrainAck(a) = decode_response(&ps[2 + i]).unwrap().1 else {
                panic!("{name} step {i}")
            };
            assert_eq!(
                (a.pred as u64, a.loss_q15 as i64),
                (
                    st["pred"].as_u64().unwrap(),
                    st["loss_q15"].as_i64().unwrap()
                ),
                "{name} step {i}"
            );
        }
        let mut got = vec![];
        for p in &ps[2 + steps.len()..] {
            let Response::DownloadData { data, .. } = decode_response(p).unwrap().1 else {
                panic!("{name}: download")
            };
            got.extend_from_slice(data);
        }
        assert_eq!(got, final_blob, "{name}: final blob");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn bad_arguments_are_reported() {
    for args in [
        &["--baud", "fast"][..],
        &["--corrupt-rate", "1.5"],
        &["--drop-rate", "-0.1"],
        &["--stdio", "--tcp", "127.0.0.1:0"],
        &["--tcp", "nowhere"],
        &["--frobnicate"],
    ] {
        let out = Command::new(EMU).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error"),
            "{args:?}"
        );
    }
}

#[test]
fn baud_rate_paces_the_line() {
    // 20 training frames of 113 bytes: ~2260 bytes, ~196 ms at 115200 baud (replies overlap).
    let mut input = wire(0, &Request::Hello { next_train_seq: 0 });
    for i in 0..20 {
        let (x, y) = sample(i);
        input.extend(wire(
            i as u16,
            &Request::Train {
                label: y,
                features: &x,
            },
        ));
    }
    let t = Instant::now();
    let (ok, out) = stdio_run(&["--baud", "115200"], &input);
    let slow = t.elapsed();
    assert!(ok);
    assert_eq!(packets(&out).len(), 21);
    let bytes = input.len() as f64;
    assert!(
        slow.as_secs_f64() > bytes * 10.0 / 115_200.0 * 0.9,
        "{slow:?} for {bytes} bytes"
    );
    let t = Instant::now();
    stdio_run(&["--baud", "921600"], &input);
    let fast = t.elapsed();
    assert!(fast < slow, "{fast:?} vs {slow:?}");
}

#[test]
fn pty_mode_prints_the_device_and_exits_on_sigterm() {
    let mut child = Command::new(EMU)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    let path = first
        .trim()
        .strip_prefix("PTY ")
        .unwrap_or_else(|| panic!("first line {first:?}"));
    assert!(path.starts_with("/dev/pts/"), "{path}");

    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    for round in 0..2u16 {
        // Reopening works: the emulator keeps serving.
        tty.write_all(&wire(round, &Request::Hello { next_train_seq: 7 }))
            .unwrap();
        let reply = read_frames(&mut tty, 1, Duration::from_secs(5));
        assert_eq!(info(&reply[0]).next_train_seq, 7);
        if round == 0 {
            drop(tty);
            tty = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
        }
    }
    assert!(terminate(&mut child, libc::SIGTERM).success());
}

/// Read until `n` good packets arrived (or the deadline).
fn read_frames(tty: &mut std::fs::File, n: usize, within: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut d = PacketDecoder::new();
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    while out.len() < n && Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: tty.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        let k = tty.read(&mut buf).unwrap();
        for &b in &buf[..k] {
            if let Some(Ok(p)) = d.push(b) {
                out.push(p.to_vec());
            }
        }
    }
    assert_eq!(out.len(), n, "timed out");
    out
}

// -- TCP and a real go-back-N host over a faulty line -------------------------------------------

struct Host {
    s: TcpStream,
    dec: PacketDecoder,
    seq: u16,
}

impl Host {
    fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Host {
            s,
            dec: PacketDecoder::new(),
            seq: 0,
        }
    }

    /// Every good packet that arrives within `wait`.
    fn recv(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut out = vec![];
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    for &b in &buf[..k] {
                        if let Some(Ok(p)) = self.dec.push(b) {
                            out.push(p.to_vec());
                        }
                    }
                    if !out.is_empty() {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        out
    }

    /// Stop-and-wait request with retries; returns the response packet.
    fn request(&mut self, r: &Request) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        for _ in 0..50 {
            self.s.write_all(&[0]).unwrap(); // flush line noise
            self.s.write_all(&wire(seq, r)).unwrap();
            let deadline = Instant::now() + Duration::from_millis(150);
            while Instant::now() < deadline {
                for p in self.recv(Duration::from_millis(30)) {
                    if let Ok((s, _)) = decode_response(&p) {
                        if s == seq {
                            return p;
                        }
                    }
                }
            }
        }
        panic!("no response to {r:?}");
    }

    fn hello(&mut self, next: u16) -> Info {
        loop {
            let p = self.request(&Request::Hello {
                next_train_seq: next,
            });
            if let Ok((_, Response::Info(i))) = decode_response(&p) {
                return i;
            }
        }
    }

    /// Go-back-N training stream; returns the acknowledgements.
    fn train_all(&mut self, samples: &[(Vec<i8>, u8)], first: u16, window: usize) -> Vec<TrainAck> {
        let n = samples.len();
        let mut acks: Vec<Option<TrainAck>> = vec![None; n];
        let mut base = 0;
        let mut rounds = 0;
        self.hello(first);
        while base < n {
            rounds += 1;
            assert!(rounds < 5000, "no progress at {base}");
            let mut out = vec![0u8];
            for (i, (x, y)) in samples.iter().enumerate().skip(base).take(window) {
                out.extend(wire(
                    first.wrapping_add(i as u16),
                    &Request::Train {
                        label: *y,
                        features: x,
                    },
                ));
            }
            self.s.write_all(&out).unwrap();
            let mut no_session = false;
            let deadline = Instant::now() + Duration::from_millis(100);
            while Instant::now() < deadline
                && acks.iter().skip(base).take(window).any(|a| a.is_none())
            {
                for p in self.recv(Duration::from_millis(20)) {
                    match decode_response(&p) {
                        Ok((seq, Response::TrainAck(a))) => {
                            let i = seq.wrapping_sub(first) as usize;
                            if i < n && acks[i].is_none_or(|o| o.flags & ACK_DUP != 0) {
                                acks[i] = Some(a);
                            }
                        }
                        Ok((_, Response::Error(e))) if e.code == ErrorCode::NoSession => {
                            no_session = true
                        }
                        _ => {}
                    }
                }
                if no_session {
                    break;
                }
            }
            while base < n && acks[base].is_some() {
                base += 1;
            }
            if no_session {
                self.hello(first.wrapping_add(base as u16));
            }
        }
        acks.into_iter().map(Option::unwrap).collect()
    }
}

fn spawn_tcp(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(EMU)
        .args(["--quiet", "--tcp", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("TCP ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    (child, addr)
}

#[test]
fn tcp_go_back_n_over_a_corrupting_dropping_line_is_exactly_once() {
    let (mut child, addr) = spawn_tcp(&[
        "--corrupt-rate",
        "0.0005",
        "--drop-rate",
        "0.0005",
        "--seed",
        "3",
    ]);
    let samples: Vec<_> = (0..120).map(sample).collect();
    let mut host = Host::connect(&addr);
    let acks = host.train_all(&samples, 65500, 8);
    let mut reference = Box::new(TerrainMlp::new());
    reference.init_random(1);
    for (i, (x, y)) in samples.iter().enumerate() {
        let r = reference.train_step(x, *y).unwrap();
        if acks[i].pred != PRED_UNKNOWN {
            assert_eq!(acks[i].pred, r.loss.pred, "sample {i}");
        }
    }
    let i = host.hello(65500u16.wrapping_add(120));
    assert_eq!(
        i.model_hash,
        reference.state_crc32(),
        "applied exactly once, in order"
    );
    assert_eq!(i.train_steps, 120);
    // A second client after the first leaves.
    drop(host);
    let mut host = Host::connect(&addr);
    let p = host.request(&Request::Stats);
    let Ok((_, Response::Stats(Stats { preq_samples, .. }))) = decode_response(&p) else {
        panic!()
    };
    assert_eq!(preq_samples, 120);
    assert!(terminate(&mut child, libc::SIGINT).success());
}

#[test]
fn tcp_link_survives_injected_resets() {
    let (mut child, addr) = spawn_tcp(&["--reset-rate", "0.05", "--seed", "11"]);
    let samples: Vec<_> = (0..60).map(sample).collect();
    let mut host = Host::connect(&addr);
    host.train_all(&samples, 0, 4);
    let i = host.hello(60);
    assert!(
        i.boot_count > 1,
        "expected resets, boot count {}",
        i.boot_count
    );
    assert!(terminate(&mut child, libc::SIGTERM).success());
}

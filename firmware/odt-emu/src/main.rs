//! `odt-emu`: the terrain_odt co-processor firmware (`odt-app` with `FirmwareMlp`, the MLP whose
//! shape comes from the blob) running on the host behind a pseudo-terminal, stdin/stdout or TCP,
//! with a UART's pace and injected faults.
//!
//! ```text
//! odt-emu                       # prints "PTY /dev/pts/N", serve until SIGTERM/SIGINT
//! odt-emu --stdio               # frames on stdin/stdout, exits at end of input
//! odt-emu --tcp 127.0.0.1:5555  # prints "TCP 127.0.0.1:5555", one client at a time
//! odt-emu --baud 115200 --corrupt-rate 1e-4 --drop-rate 1e-4 --reset-rate 0.001 --seed 7 \
//!         --flash /tmp/odt.flash --model pretrained.odtm
//! ```

mod flash;
mod link;
mod wire;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use odt_app::{App, AppConfig, BootSource, Transport};
use odt_core::models::FirmwareMlp;

use crate::flash::FileFlash;
use crate::link::{Input, Link};
use crate::wire::{Faults, Pace, Rng};

/// Blob buffer of the emulated firmware: the longest blob the model can load.
const BLOB_BUF: usize = FirmwareMlp::MAX_BLOB_LEN;

const _: () = assert!(
    BLOB_BUF + odt_app::storage::SLOT_HEADER <= flash::SLOT_LEN
        && BLOB_BUF <= flash::PRETRAINED_LEN,
    "the emulated flash regions must hold the largest blob"
);

/// The shape of the synthetic model used without `--model` (the shipped terrain classifier's).
const SYNTHETIC_SHAPE: [usize; 4] = [102, 64, 32, 5];

/// Emulate the terrain_odt co-processor (the odt-app firmware with its model, an MLP whose shape
/// comes from the blob: up to 256 inputs, hidden layers of up to 64 units, 16 classes, 4 Dense
/// layers, 16384 weights).
///
/// By default the emulator opens a pseudo-terminal, prints `PTY /dev/pts/N` as the first line on
/// stdout and serves the link protocol (docs/protocol.md) on it until SIGTERM or SIGINT; the host
/// may close and reopen the device meanwhile. Logs go to stderr.
#[derive(Parser, Debug)]
#[command(name = "odt-emu", version)]
struct Args {
    /// Serve on stdin/stdout (binary frames); exit when stdin closes.
    #[arg(long, conflicts_with = "tcp")]
    stdio: bool,

    /// Serve one TCP client at a time on ADDR (e.g. 127.0.0.1:5555; port 0 picks a free one,
    /// printed as `TCP ADDR` on the first line of stdout).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,

    /// UART speed to mimic in both directions, in bit/s (baud/10 bytes per second, 8N1);
    /// 0 = unthrottled. Typical: 115200, 921600.
    #[arg(long, value_name = "BAUD", default_value_t = 0)]
    baud: u32,

    /// Probability that a byte on the line (either direction) is corrupted.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    corrupt_rate: f64,

    /// Probability that a byte on the line (either direction) is lost.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    drop_rate: f64,

    /// Probability, per received frame, that the co-processor resets instead of handling it
    /// (RAM state and session lost, model reloaded from flash).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    reset_rate: f64,

    /// Seed of the fault injection.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Keep the emulated flash (save slots, pretrained model, boot count) in FILE; created
    /// (erased) if missing. Without it the flash lives in RAM only.
    #[arg(long, value_name = "FILE")]
    flash: Option<PathBuf>,

    /// Pretrained model blob (FORMAT.md: an MLP within the firmware's capacity) written to the
    /// pretrained region at start. Without it a synthetic 102-64-32-5 model (init_random(1)) is
    /// used. A blob the firmware cannot load is refused (exit status 2, the reason on stderr).
    #[arg(long, value_name = "BLOB")]
    model: Option<PathBuf>,

    /// Log nothing on stderr but errors.
    #[arg(long, short)]
    quiet: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in [0, 1]"))
    }
}

// -- signals --------------------------------------------------------------------------------------

static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with an async-signal-safe handler (one atomic store) and
        // no SA_RESTART, so a blocking poll returns EINTR and the loop sees the flag.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

// -- the firmware's transport ---------------------------------------------------------------------

/// The emulated UART as the firmware sees it: bytes that have arrived, bytes it has sent.
#[derive(Default)]
struct EmuTransport {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
}

impl Transport for EmuTransport {
    type Error = Infallible;
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.rx.len());
        for (d, s) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
    fn write(&mut self, data: &[u8]) -> Result<(), Infallible> {
        self.tx.extend_from_slice(data);
        Ok(())
    }
}

// -- the line -------------------------------------------------------------------------------------

/// Bytes in flight and what happens to them.
struct Line {
    rng: Rng,
    faults: Faults,
    reset_rate: f64,
    /// Host → co-processor, already through the fault injector, not yet arrived.
    up: VecDeque<u8>,
    up_pace: Pace,
    /// Whether the co-processor has received part of a frame.
    in_frame: bool,
    /// Co-processor → host, already through the fault injector, not yet sent.
    down: VecDeque<u8>,
    down_pace: Pace,
    frames: u64,
    resets: u64,
}

enum Next {
    /// The co-processor reset: boot again with these devices.
    Reset(EmuTransport, FileFlash),
    /// Stop the emulator.
    Exit(String),
}

type Firmware<'a> = App<'a, EmuTransport, FileFlash, BLOB_BUF>;

fn serve(
    mut app: Firmware<'_>,
    link: &mut Link,
    line: &mut Line,
    log: &dyn Fn(&str),
) -> Result<Next, String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let sig = STOP.load(Ordering::SeqCst);
        if sig != 0 {
            return Ok(Next::Exit(format!("signal {sig}, exiting")));
        }
        let now = Instant::now();

        // Host → line.
        if link.open_for_input() {
            for _ in 0..64 {
                match link.read(&mut buf, log) {
                    Input::Data(n) => {
                        for &b in &buf[..n] {
                            if let Some(b) = line.faults.apply(&mut line.rng, b) {
                                line.up.push_back(b);
                            }
                        }
                    }
                    Input::Nothing | Input::Closed => break,
                }
            }
        }

        // Line → co-processor, at the UART's pace; each frame is handled as it completes.
        let n = line.up_pace.take(now, line.up.len());
        for _ in 0..n {
            let Some(b) = line.up.pop_front() else { break };
            if b != 0 {
                line.in_frame = true;
                app.transport_mut().rx.push_back(b);
                continue;
            }
            if line.in_frame {
                line.in_frame = false;
                line.frames += 1;
                if line.reset_rate > 0.0 && line.rng.chance(line.reset_rate) {
                    // Power glitch as the frame arrives: RAM (partial input, unsent output,
                    // session, model state) is lost; the flash survives.
                    line.resets += 1;
                    line.down.clear();
                    let (mut t, f) = app.into_parts();
                    t.rx.clear();
                    t.tx.clear();
                    return Ok(Next::Reset(t, f));
                }
            }
            app.transport_mut().rx.push_back(0);
            app.poll();
        }

        // Co-processor → line → host.
        let out = std::mem::take(&mut app.transport_mut().tx);
        for b in out {
            if let Some(b) = line.faults.apply(&mut line.rng, b) {
                line.down.push_back(b);
            }
        }
        if !link.has_peer() {
            line.down.clear();
        }
        let n = line.down_pace.take(now, line.down.len());
        if n > 0 {
            let chunk: Vec<u8> = line.down.iter().take(n).copied().collect();
            let sent = link.write(&chunk)?;
            line.down.drain(..sent.min(n));
            line.down_pace.refund(n - sent.min(n));
        }

        if !link.open_for_input() && line.up.is_empty() && line.down.is_empty() {
            return Ok(Next::Exit("end of input, exiting".into()));
        }

        // Sleep until input, the next byte due, or a signal.
        let due = [
            line.up_pace.next_due(line.up.len()),
            line.down_pace.next_due(line.down.len()),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match due {
            Some(d) => d.clamp(Duration::from_millis(1), Duration::from_millis(200)),
            None => Duration::from_millis(200),
        };
        let mut pfd = libc::pollfd {
            fd: link.poll_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let nfds = if link.open_for_input() { 1 } else { 0 };
        // SAFETY: at most one valid pollfd; EINTR (a signal) just ends the wait.
        unsafe { libc::poll(&mut pfd, nfds, timeout.as_millis() as libc::c_int) };
    }
}

fn pretrained_blob(args: &Args) -> Result<Vec<u8>, String> {
    match &args.model {
        Some(path) => {
            let blob =
                std::fs::read(path).map_err(|e| format!("--model {}: {e}", path.display()))?;
            let mut probe = Box::new(FirmwareMlp::new());
            probe.load_blob(&blob).map_err(|e| {
                format!(
                    "--model {}: not a valid model blob for this firmware: {e} ({e:?})",
                    path.display()
                )
            })?;
            Ok(blob)
        }
        None => {
            let mut m = Box::new(FirmwareMlp::new());
            m.init_random_mlp(&SYNTHETIC_SHAPE, 1)
                .map_err(|e| format!("synthetic model: {e}"))?;
            let mut blob = vec![0u8; FirmwareMlp::MAX_BLOB_LEN];
            let n = m
                .save_blob(&mut blob)
                .map_err(|e| format!("synthetic model: {e:?}"))?;
            blob.truncate(n);
            Ok(blob)
        }
    }
}

/// `102-64-32-5` for a blob the firmware accepts.
fn shape_text(blob: &[u8]) -> String {
    let mut m = Box::new(FirmwareMlp::new());
    if m.load_blob(blob).is_err() {
        return "?".into();
    }
    let s = m.shape();
    s.widths[..=s.layers]
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

fn run(args: Args) -> Result<(), String> {
    let quiet = args.quiet;
    let log = move |s: &str| {
        if !quiet {
            eprintln!("odt-emu: {s}");
        }
    };

    let blob = pretrained_blob(&args)?;
    let mut flash = match &args.flash {
        Some(p) => FileFlash::open(p)?,
        None => FileFlash::in_memory(),
    };
    flash.program_pretrained(&blob)?;

    let mut link = if args.stdio {
        Link::stdio()
    } else if let Some(addr) = args.tcp {
        Link::tcp(addr)?
    } else {
        Link::pty()?
    };
    install_signal_handlers();
    if let Some(b) = link.banner() {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{b}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    log(&format!(
        "MLP {} (blob {} bytes; firmware capacity {} inputs, {}-unit hidden layers, {} classes, \
         {} Dense layers, {} weights, model RAM {} B), {}, baud {}, corrupt {} drop {} reset {} seed {}",
        shape_text(&blob),
        blob.len(),
        FirmwareMlp::MAX_INPUTS,
        FirmwareMlp::MAX_WIDTH,
        FirmwareMlp::MAX_OUTPUTS,
        FirmwareMlp::MAX_DENSE,
        FirmwareMlp::MAX_PARAMS_WEIGHTS,
        FirmwareMlp::RAM_BYTES,
        match &args.model {
            Some(p) => format!("pretrained {}", p.display()),
            None => "synthetic pretrained model".into(),
        },
        args.baud,
        args.corrupt_rate,
        args.drop_rate,
        args.reset_rate,
        args.seed
    ));

    let mut line = Line {
        rng: Rng::new(args.seed),
        faults: Faults {
            corrupt_rate: args.corrupt_rate,
            drop_rate: args.drop_rate,
            corrupted: 0,
            dropped: 0,
        },
        reset_rate: args.reset_rate,
        up: VecDeque::new(),
        up_pace: Pace::new(args.baud),
        in_frame: false,
        down: VecDeque::new(),
        down_pace: Pace::new(args.baud),
        frames: 0,
        resets: 0,
    };
    let cfg = AppConfig::new(FirmwareMlp::BATCH as u8);
    let mut model = Box::new(FirmwareMlp::new());
    let mut transport = EmuTransport::default();
    loop {
        // Power on: the model's RAM starts zeroed, the firmware boots from flash.
        *model = FirmwareMlp::new();
        let app = Firmware::new(&mut *model, transport, flash, cfg)
            .map_err(|e| format!("boot: {e:?}"))?;
        let boot = app.boot_info();
        let from = match boot.source {
            BootSource::Slot { slot, generation } => {
                format!("save slot {slot} (generation {generation})")
            }
            BootSource::Pretrained => "the pretrained region".into(),
            BootSource::Unchanged => "nowhere (no valid model in flash)".into(),
        };
        log(&format!("boot {}: model from {from}", boot.boot_count));
        match serve(app, &mut link, &mut line, &log)? {
            Next::Reset(t, f) => {
                log(&format!(
                    "injected reset #{} after {} frames",
                    line.resets, line.frames
                ));
                transport = t;
                flash = f;
            }
            Next::Exit(why) => {
                log(&format!(
                    "{why} ({} frames received, {} resets, {} bytes corrupted, {} dropped)",
                    line.frames, line.resets, line.faults.corrupted, line.faults.dropped
                ));
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odt-emu: error: {e}");
            ExitCode::from(2)
        }
    }
}

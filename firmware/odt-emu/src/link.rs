//! The host-facing end of the emulated serial line: a pseudo-terminal, stdin/stdout or TCP.

use std::ffi::CStr;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Result of a non-blocking read.
pub enum Input {
    /// Bytes read.
    Data(usize),
    /// Nothing available now.
    Nothing,
    /// The peer closed the line for good (stdio end of file).
    Closed,
}

/// The line to the host.
pub enum Link {
    /// A pseudo-terminal: the host opens the slave device.
    Pty {
        master: OwnedFd,
        /// Kept open so the master never sees a hang-up when the host closes and reopens.
        _slave: OwnedFd,
        path: String,
    },
    /// Standard input and output.
    Stdio { eof: bool },
    /// One TCP client at a time.
    Tcp {
        listener: TcpListener,
        client: Option<TcpStream>,
    },
}

fn last_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn set_nonblocking(fd: RawFd) -> Result<(), String> {
    // SAFETY: fcntl on a descriptor we own, with valid flag arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(last_err("fcntl(O_NONBLOCK)"));
    }
    Ok(())
}

impl Link {
    /// Open a pseudo-terminal pair in raw mode.
    pub fn pty() -> Result<Self, String> {
        let (mut m, mut s): (libc::c_int, libc::c_int) = (-1, -1);
        // SAFETY: openpty writes two descriptors; null name/termios/winsize are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(last_err("openpty"));
        }
        // SAFETY: both descriptors were just returned by openpty and are owned by nobody else.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        // Raw mode on the slave: no echo, no line editing, no CR/LF translation, 8-bit clean.
        // SAFETY: termios is plain data; tcgetattr fills it before use.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(s, &mut t) != 0 {
                return Err(last_err("tcgetattr"));
            }
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(s, libc::TCSANOW, &t) != 0 {
                return Err(last_err("tcsetattr"));
            }
        }
        let mut buf = [0 as libc::c_char; 128];
        // SAFETY: ttyname_r writes a NUL-terminated path of at most buf.len() bytes.
        let rc = unsafe { libc::ttyname_r(s, buf.as_mut_ptr(), buf.len()) };
        if rc != 0 {
            return Err(format!("ttyname: {}", io::Error::from_raw_os_error(rc)));
        }
        // SAFETY: ttyname_r succeeded, so buf holds a NUL-terminated string.
        let path = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        set_nonblocking(master.as_raw_fd())?;
        Ok(Link::Pty {
            master,
            _slave: slave,
            path,
        })
    }

    /// Serve on stdin/stdout.
    pub fn stdio() -> Self {
        Link::Stdio { eof: false }
    }

    /// Listen on `addr`.
    pub fn tcp(addr: SocketAddr) -> Result<Self, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("--tcp {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("--tcp {addr}: {e}"))?;
        Ok(Link::Tcp {
            listener,
            client: None,
        })
    }

    /// The line printed first on stdout (none for stdio, whose stdout carries frames).
    pub fn banner(&self) -> Option<String> {
        match self {
            Link::Pty { path, .. } => Some(format!("PTY {path}")),
            Link::Tcp { listener, .. } => listener.local_addr().ok().map(|a| format!("TCP {a}")),
            Link::Stdio { .. } => None,
        }
    }

    /// The descriptor to wait on for input.
    pub fn poll_fd(&self) -> RawFd {
        match self {
            Link::Pty { master, .. } => master.as_raw_fd(),
            Link::Stdio { .. } => libc::STDIN_FILENO,
            Link::Tcp { listener, client } => match client {
                Some(c) => c.as_raw_fd(),
                None => listener.as_raw_fd(),
            },
        }
    }

    /// Whether input can still arrive.
    pub fn open_for_input(&self) -> bool {
        !matches!(self, Link::Stdio { eof: true })
    }

    /// Whether there is someone to write to.
    pub fn has_peer(&self) -> bool {
        match self {
            Link::Tcp { client, .. } => client.is_some(),
            _ => true,
        }
    }

    /// Read what is available (call when `poll_fd` is readable, or any time for pty/TCP).
    pub fn read(&mut self, buf: &mut [u8], log: &dyn Fn(&str)) -> Input {
        match self {
            Link::Pty { master, .. } => {
                // SAFETY: reading into a valid buffer from a descriptor we own.
                let n =
                    unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    Input::Data(n as usize)
                } else {
                    // EAGAIN: nothing; EIO: no slave open (cannot happen while we hold one).
                    Input::Nothing
                }
            }
            Link::Stdio { eof } => {
                if *eof {
                    return Input::Closed;
                }
                let mut pfd = libc::pollfd {
                    fd: libc::STDIN_FILENO,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout.
                if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
                    return Input::Nothing;
                }
                // SAFETY: stdin is readable (or at EOF/hang-up), so read does not block.
                let n =
                    unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
                match n {
                    n if n > 0 => Input::Data(n as usize),
                    0 => {
                        *eof = true;
                        Input::Closed
                    }
                    _ if io::Error::last_os_error().kind() == ErrorKind::Interrupted => {
                        Input::Nothing
                    }
                    _ => {
                        *eof = true;
                        Input::Closed
                    }
                }
            }
            Link::Tcp { listener, client } => {
                if client.is_none() {
                    match listener.accept() {
                        Ok((s, peer)) => {
                            let _ = s.set_nonblocking(true);
                            let _ = s.set_nodelay(true);
                            log(&format!("client {peer} connected"));
                            *client = Some(s);
                        }
                        Err(_) => return Input::Nothing,
                    }
                }
                let Some(c) = client.as_mut() else {
                    return Input::Nothing;
                };
                match c.read(buf) {
                    Ok(0) => {
                        log("client disconnected");
                        *client = None;
                        Input::Nothing
                    }
                    Ok(n) => Input::Data(n),
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        Input::Nothing
                    }
                    Err(e) => {
                        log(&format!("client error: {e}; disconnected"));
                        *client = None;
                        Input::Nothing
                    }
                }
            }
        }
    }

    /// Write as much of `data` as the line takes now; returns how many bytes went out (bytes for
    /// a vanished peer are consumed and lost, as on a real line).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, String> {
        match self {
            Link::Pty { master, .. } => {
                // SAFETY: writing from a valid buffer to a descriptor we own.
                let n =
                    unsafe { libc::write(master.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                Ok(n.max(0) as usize)
            }
            Link::Stdio { .. } => {
                let mut out = io::stdout().lock();
                match out.write_all(data).and_then(|_| out.flush()) {
                    Ok(()) => Ok(data.len()),
                    Err(e) => Err(format!("stdout: {e}")),
                }
            }
            Link::Tcp { client, .. } => match client.as_mut() {
                None => Ok(data.len()),
                Some(c) => match c.write(data) {
                    Ok(n) => Ok(n),
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        Ok(0)
                    }
                    Err(_) => {
                        *client = None;
                        Ok(data.len())
                    }
                },
            },
        }
    }
}

//! A worker's sends of one delivery pass, handed to the kernel together: the
//! frames a pass writes to plain sockets are queued here (copied into one
//! buffer) and sent with one `io_uring_enter` per [`ENTRIES`] of them and at
//! the end of the pass, instead of one `sendto` system call each. The
//! sockets are the ring's registered files (by the connection's token), so
//! the kernel does not look each one up in the descriptor table and count a
//! reference to it per send.
//!
//! Every send is non-blocking (`MSG_DONTWAIT`): the kernel completes it while
//! the batch is submitted, with what the socket took, or `EAGAIN`; the pass
//! then settles each connection ([`end`]) as a direct send would have been
//! settled at once. Where io_uring cannot be set up (an old kernel, a seccomp
//! profile that refuses it) every send stays a system call of its own.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Sends one batch holds at most; a pass that writes more settles the batch
/// and starts another ([`writing`]). A batch's first frame leaves when the
/// batch does, at most this many writes later, for one system call per
/// batch.
const ENTRIES: u32 = 256;

/// Registered files, one per connection token (the kernel's table is sparse:
/// an unused entry costs a pointer).
const FILES: u32 = 65_536;

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

#[derive(Default)]
struct Batch {
    /// `None` before the first pass, or when the ring could not be set up.
    ring: Option<IoUring>,
    tried: bool,
    /// Inside a pass: sends may be queued.
    open: bool,
    /// The token of the connection the pass is writing.
    token: u32,
    /// The registered socket of each token (-1: none).
    files: Vec<RawFd>,
    /// How many files the ring's table holds.
    capacity: u32,
    /// The queued frames, back to back.
    bytes: Vec<u8>,
    sends: Vec<Queued>,
    /// Results by send, filled when the batch is submitted.
    results: Vec<i32>,
}

struct Queued {
    token: u32,
    start: usize,
    len: usize,
}

impl Batch {
    fn ring(&mut self) -> Option<&mut IoUring> {
        if !self.tried {
            self.tried = true;
            // A registered table may not be larger than the descriptor limit.
            self.capacity = FILES.min(crate::open_files::soft_limit());
            self.ring = setup(self.capacity)
                .inspect_err(|e| {
                    tracing::info!(error = %e, "io_uring is not available: one system call per send")
                })
                .ok();
        }
        self.ring.as_mut()
    }
}

fn setup(files: u32) -> io::Result<IoUring> {
    let ring = IoUring::new(ENTRIES)?;
    ring.submitter().register_files_sparse(files)?;
    Ok(ring)
}

/// Registers `fd` as connection `token`'s file on this worker's ring (sets the
/// ring up if this is the worker's first); false when sends to it cannot be
/// batched (no ring, a token beyond the table, the kernel refused).
pub fn register(token: u32, fd: RawFd) -> bool {
    BATCH.with_borrow_mut(|b| {
        // Set up on the worker's first registration.
        b.ring();
        let Some(ring) = b.ring.as_ref().filter(|_| token < b.capacity) else {
            return false;
        };
        let ok = matches!(ring.submitter().register_files_update(token, &[fd]), Ok(1));
        if ok {
            set_file(&mut b.files, token, fd);
        }
        ok
    })
}

/// Forgets connection `token`'s file, if [`register`] registered one (its
/// socket closes once its descriptor is closed too).
pub fn unregister(token: u32) {
    BATCH.with_borrow_mut(|b| {
        let Some(file) = b.files.get_mut(token as usize).filter(|f| **f >= 0) else {
            return;
        };
        *file = -1;
        if let Some(ring) = &b.ring {
            // -1 empties the entry; a failure leaves the file registered,
            // and the socket open, until the entry is used again.
            if let Err(e) = ring.submitter().register_files_update(token, &[-1]) {
                tracing::warn!(error = %e, token, "io_uring: a registered file stays");
            }
        }
    });
}

fn set_file(files: &mut Vec<RawFd>, token: u32, fd: RawFd) {
    let at = token as usize;
    if files.len() <= at {
        files.resize(at + 1, -1);
    }
    files[at] = fd;
}

/// Opens a pass: sends may be queued until [`end`].
pub fn begin() {
    BATCH.with_borrow_mut(|b| b.open = b.ring.is_some());
}

/// The pass now writes connection `token`; true when the batch is full and
/// must be settled ([`end`]) first.
pub fn writing(token: u32) -> bool {
    BATCH.with_borrow_mut(|b| {
        b.token = token;
        b.sends.len() >= ENTRIES as usize
    })
}

/// Queues `frame` for socket `fd`, the connection being written (registered
/// with [`register`]); false outside a pass, without a ring, or for another
/// socket: send it now.
pub fn queue(fd: RawFd, frame: &[u8]) -> bool {
    BATCH.with_borrow_mut(|b| {
        let registered = b.files.get(b.token as usize) == Some(&fd);
        if !b.open || !registered || b.sends.len() >= ENTRIES as usize || frame.is_empty() {
            return false;
        }
        let start = b.bytes.len();
        b.bytes.extend_from_slice(frame);
        let token = b.token;
        b.sends.push(Queued {
            token,
            start,
            len: frame.len(),
        });
        true
    })
}

/// Sends what was queued and calls `settle` with each send's token, outcome
/// and frame (in the order queued); the pass stays open if `keep_open`.
pub fn end(keep_open: bool, mut settle: impl FnMut(u32, io::Result<usize>, &[u8])) {
    let taken = BATCH.with_borrow_mut(|b| {
        b.open = keep_open && b.ring.is_some();
        if b.sends.is_empty() {
            return None;
        }
        let mut bytes = std::mem::take(&mut b.bytes);
        let sends = std::mem::take(&mut b.sends);
        let mut results = std::mem::take(&mut b.results);
        submit(b, &mut bytes, &sends, &mut results);
        Some((bytes, sends, results))
    });
    let Some((mut bytes, mut sends, results)) = taken else {
        return;
    };
    for (send, &res) in sends.iter().zip(&results) {
        let wrote = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as usize)
        };
        settle(send.token, wrote, &bytes[send.start..send.start + send.len]);
    }
    // Kept for their capacity (a large byte buffer not).
    bytes.clear();
    sends.clear();
    BATCH.with_borrow_mut(|b| {
        if bytes.capacity() <= 1 << 20 {
            b.bytes = bytes;
        }
        b.sends = sends;
        b.results = results;
    });
}

/// Submits every queued send and waits for all of their completions (each is
/// non-blocking: they complete during the submission); `results` gets each
/// send's result, `-errno` for a failure.
fn submit(b: &mut Batch, bytes: &mut [u8], sends: &[Queued], results: &mut Vec<i32>) {
    results.clear();
    results.resize(sends.len(), -libc::EIO);
    let Some(ring) = b.ring.as_mut() else {
        return;
    };
    {
        let mut sq = ring.submission();
        for (i, send) in sends.iter().enumerate() {
            let entry = opcode::Send::new(
                types::Fixed(send.token),
                bytes[send.start..].as_ptr(),
                // At most a frame per send: far below 4 GiB.
                u32::try_from(send.len).unwrap_or(u32::MAX),
            )
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .build()
            .user_data(i as u64);
            // SAFETY: the buffer (`bytes`, borrowed mutably by the caller
            // until this returns) is neither written nor freed before every
            // send's completion has been reaped below, or the ring dropped.
            // The queue has room: at most ENTRIES sends per batch, and every
            // batch is reaped whole before the next.
            if unsafe { sq.push(&entry) }.is_err() {
                results[i] = -libc::ENOBUFS;
            }
        }
    }
    let mut reaped = 0;
    let pushed = results.iter().filter(|&&r| r != -libc::ENOBUFS).count();
    let mut failed = None;
    while reaped < pushed {
        match ring.submit_and_wait(pushed - reaped) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        for cqe in ring.completion() {
            if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                *r = cqe.result();
                reaped += 1;
            }
        }
    }
    if let Some(e) = failed {
        // The kernel may still hold sends that point into `bytes`: dropping
        // the ring cancels them before the buffer is used again. What was
        // not reaped counts as failed (those connections close), and later
        // sends are system calls.
        tracing::error!(error = %e, "io_uring failed: one system call per send from now on");
        b.ring = None;
        b.open = false;
        b.files.clear();
    }
}

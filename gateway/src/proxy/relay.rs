//! The relay: frames flow both ways, forwarded as the bytes that arrived.
//!
//! One task drives both directions with a hand-written poll loop (like
//! `tokio::io::copy_bidirectional`), so neither direction can starve or deadlock the other, and
//! no lock sits between the halves of a TLS stream. Each direction reads into its own buffer, cuts
//! the complete messages at the front off as one shared `Bytes` (no copy), shows each message to
//! the recorder tap, and writes the chunk out. A message larger than [`STREAM_THRESHOLD`] is not
//! held whole: it is passed through as it arrives and the tap sees its first part.
//!
//! Under strict recording the tap may hold a chunk of client messages until their events are
//! stored: the pump then stops reading that client (back-pressure) while the server's answers
//! to earlier statements keep flowing.
//!
//! Metrics (bytes and messages each way, statement latency) are counted per chunk on handles
//! resolved once ([`crate::metrics`]): an atomic add each, and one clock read for a chunk that
//! starts or answers a statement ([`StatementClock`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use metrics::{Counter, Histogram};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::timing::StatementClock;

use crate::protocol::ProtocolError;
use crate::protocol::backend::{ERROR_RESPONSE, ErrorFields, ErrorMessage};
use crate::protocol::frame::{Frame, HEADER_LEN, parse_header};
use crate::protocol::frontend::TERMINATE;
use crate::record::{Direction, RecordingFailed, Release, SessionTap};

/// Messages above this size are streamed through instead of being held whole.
pub const STREAM_THRESHOLD: usize = 1024 * 1024;
/// The most a read asks room for; TLS records carry at most 16 KiB of plaintext.
const READ_CHUNK: usize = 32 * 1024;
/// The least a read asks room for. Room grows (doubling) while reads fill it and shrinks back
/// while they stay small; a session waiting with nothing buffered holds no buffer at all.
const MIN_READ: usize = 4 * 1024;

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client closed the connection; `said_goodbye` if its last message was Terminate.
    ClientClosed { said_goodbye: bool },
    /// The server closed the connection (its last message, often a FATAL, was forwarded).
    ServerClosed,
    /// The client broke the protocol or its connection failed.
    ClientFailed(RelayError),
    /// The server's connection failed.
    ServerFailed(RelayError),
    /// The session's recording cannot be kept; the held chunk was not forwarded.
    RecordingFailed(RecordingFailed),
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection lost in the middle of a message")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Recording(#[from] RecordingFailed),
}

/// One direction: a receive buffer, the chunk being written, and the oversized message being
/// streamed, if any.
struct Pump {
    direction: Direction,
    buf: BytesMut,
    out: Bytes,
    /// Bytes of an oversized message still to pass through.
    streaming: usize,
    limit: usize,
    need_flush: bool,
    /// `out` waits for the tap's release (strict recording).
    held: bool,
    last_tag: u8,
    bytes: u64,
    /// The last FATAL the server sent, if any (server-to-client direction only).
    server_fatal: Option<String>,
    /// This direction's process-wide counters.
    bytes_total: &'static Counter,
    messages_total: &'static Counter,
    /// Room the next read asks for, between [`MIN_READ`] and [`READ_CHUNK`].
    read_size: usize,
}

enum PumpDone {
    Eof,
}

impl Pump {
    fn new(direction: Direction, limit: usize, leftover: BytesMut) -> Self {
        Pump {
            direction,
            buf: leftover,
            out: Bytes::new(),
            streaming: 0,
            limit,
            need_flush: false,
            held: false,
            last_tag: 0,
            bytes: 0,
            server_fatal: None,
            bytes_total: crate::metrics::get().bytes(direction),
            messages_total: crate::metrics::get().messages(direction),
            read_size: MIN_READ,
        }
    }

    /// True when nothing is half-written: a message of our own can be sent after `out`.
    fn at_message_boundary(&self) -> bool {
        self.streaming == 0
    }

    /// Moves bytes from `src` to `dst` until `src` ends, an error occurs, or it would block.
    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
        tap: &mut Option<Box<dyn SessionTap>>,
        timing: &mut Timing,
    ) -> Poll<Result<PumpDone, (bool, RelayError)>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        // The error tuple says whether the *reading* side (true) or the writing side failed.
        loop {
            if self.held {
                let release = match tap.as_mut() {
                    Some(tap) => tap.poll_release(cx),
                    None => Poll::Ready(Ok(())),
                };
                match release {
                    Poll::Ready(Ok(())) => self.held = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((true, e.into()))),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(dst.as_mut().poll_flush(cx)).map_err(|e| (false, e.into()))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while !self.out.is_empty() {
                match dst.as_mut().poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((
                            false,
                            io::Error::from(io::ErrorKind::WriteZero).into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((false, e.into()))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Some(chunk) = self.next_chunk(tap, timing).map_err(|e| (true, e))? {
                self.bytes += chunk.len() as u64;
                self.bytes_total.increment(chunk.len() as u64);
                self.out = chunk;
                continue;
            }
            if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
                self.buf.reserve(self.read_size);
            }
            let room = self.buf.capacity() - self.buf.len();
            let read = match poll_read_buf(src.as_mut(), cx, &mut self.buf) {
                // Many clients (libpq among them) close TCP without a TLS close_notify: at a
                // message boundary that is an ordinary end, not an attack on truncation.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(0))
                }
                other => other,
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    if self.need_flush {
                        ready!(dst.as_mut().poll_flush(cx)).map_err(|e| (false, e.into()))?;
                        self.need_flush = false;
                    }
                    if !self.buf.is_empty() || self.streaming > 0 {
                        return Poll::Ready(Err((true, RelayError::Truncated)));
                    }
                    return Poll::Ready(Ok(PumpDone::Eof));
                }
                Poll::Ready(Ok(n)) => {
                    self.read_size = if n >= room {
                        (self.read_size * 2).min(READ_CHUNK)
                    } else if n < self.read_size / 8 {
                        (self.read_size / 2).max(MIN_READ)
                    } else {
                        self.read_size
                    };
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((true, e.into()))),
                Poll::Pending => {
                    // Nothing held and nothing to read: the session waits, maybe for hours,
                    // so it gives its buffer back (reads are readiness-based: the next one
                    // allocates when data is there). Thousands of idle sessions then hold no
                    // relay buffers at all. `out` goes too: written out, it is empty, but it
                    // still shares (and so keeps alive) the allocation it was cut from.
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                        self.out = Bytes::new();
                    }
                    if self.need_flush {
                        ready!(dst.as_mut().poll_flush(cx)).map_err(|e| (false, e.into()))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Cuts the next chunk to forward off the buffer: all complete messages at its front, or the
    /// next piece of an oversized message.
    fn next_chunk(
        &mut self,
        tap: &mut Option<Box<dyn SessionTap>>,
        timing: &mut Timing,
    ) -> Result<Option<Bytes>, RelayError> {
        if self.streaming > 0 {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let n = self.streaming.min(self.buf.len());
            self.streaming -= n;
            return Ok(Some(self.buf.split_to(n).freeze()));
        }
        timing.clock.begin_chunk();
        let mut end = 0;
        let mut messages = 0;
        while let Some(h) = parse_header(&self.buf[end..], self.limit)? {
            if end + h.frame_len() <= self.buf.len() {
                if h.tag == ERROR_RESPONSE && self.direction == Direction::ServerToClient {
                    // Rare, so worth a look: a FATAL means the server is ending the session, and
                    // the client may hang up before the server's close reaches us.
                    let body = &self.buf[end + HEADER_LEN..end + h.frame_len()];
                    let f = ErrorFields::parse(body);
                    if matches!(f.severity.as_str(), "FATAL" | "PANIC") {
                        self.server_fatal =
                            Some(format!("{} {}: {}", f.severity, f.code, f.message));
                    }
                }
                end += h.frame_len();
                messages += 1;
                self.last_tag = h.tag;
                timing.message(self.direction, h.tag);
                continue;
            }
            if end == 0 && h.body_len > STREAM_THRESHOLD {
                // Too large to hold: the tap sees what has arrived, the rest streams through.
                if let Some(tap) = tap.as_mut() {
                    let body = Bytes::copy_from_slice(&self.buf[HEADER_LEN..]);
                    tap.frame(
                        self.direction,
                        Frame {
                            tag: h.tag,
                            body_len: h.body_len,
                            body,
                        },
                    );
                    self.held = tap.chunk_done(self.direction)? == Release::AfterCommit;
                }
                self.last_tag = h.tag;
                self.messages_total.increment(1);
                timing.message(self.direction, h.tag);
                self.streaming = h.frame_len();
                return self.next_chunk(tap, timing);
            }
            self.buf.reserve(h.frame_len() - (self.buf.len() - end));
            break;
        }
        if end == 0 {
            return Ok(None);
        }
        self.messages_total.increment(messages);
        let chunk = self.buf.split_to(end).freeze();
        if let Some(tap) = tap.as_mut() {
            show_frames(tap.as_mut(), self.direction, &chunk);
            self.held = tap.chunk_done(self.direction)? == Release::AfterCommit;
        }
        Ok(Some(chunk))
    }
}

/// Hands each message of a chunk of whole messages to the tap as a shared slice.
fn show_frames(tap: &mut dyn SessionTap, direction: Direction, chunk: &Bytes) {
    let mut at = 0;
    while let Ok(Some(h)) = parse_header(&chunk[at..], usize::MAX) {
        let body = chunk.slice(at + HEADER_LEN..at + h.frame_len());
        tap.frame(
            direction,
            Frame {
                tag: h.tag,
                body_len: h.body_len,
                body,
            },
        );
        at += h.frame_len();
    }
}

/// The session's statement clock and where its timings go.
struct Timing {
    clock: StatementClock,
    statement_duration: &'static Histogram,
}

impl Timing {
    fn message(&mut self, direction: Direction, tag: u8) {
        if let Some(took) = self.clock.message(direction, tag) {
            self.statement_duration.record(took.as_secs_f64());
        }
    }
}

/// Both directions of one session.
pub struct Relay {
    client_to_server: Pump,
    server_to_client: Pump,
    timing: Timing,
}

impl Relay {
    /// The leftovers hold bytes each side sent after the login, not yet forwarded.
    pub fn new(
        max_client_message: usize,
        client_leftover: BytesMut,
        server_leftover: BytesMut,
    ) -> Self {
        Relay {
            client_to_server: Pump::new(
                Direction::ClientToServer,
                max_client_message,
                client_leftover,
            ),
            // Server messages are trusted to respect PostgreSQL's own 1 GB limit; big ones stream.
            server_to_client: Pump::new(Direction::ServerToClient, usize::MAX, server_leftover),
            timing: Timing {
                clock: StatementClock::default(),
                statement_duration: &crate::metrics::get().statement_duration,
            },
        }
    }

    /// Relays until one side closes or fails. Cancel-safe: dropping the future loses no bytes
    /// (they stay in the pumps), so it can sit in `select!` beside a stop signal.
    pub async fn run<C, S>(
        &mut self,
        client: &mut C,
        server: &mut S,
        tap: &mut Option<Box<dyn SessionTap>>,
    ) -> RelayEnd
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        poll_fn(|cx| {
            let c2s = &mut self.client_to_server;
            let timing = &mut self.timing;
            if let Poll::Ready(r) = c2s.poll_pump(
                cx,
                Pin::new(&mut *client),
                Pin::new(&mut *server),
                tap,
                timing,
            ) {
                return Poll::Ready(match r {
                    Ok(PumpDone::Eof) => RelayEnd::ClientClosed {
                        said_goodbye: c2s.last_tag == TERMINATE,
                    },
                    Err((_, RelayError::Recording(e))) => RelayEnd::RecordingFailed(e),
                    Err((true, e)) => RelayEnd::ClientFailed(e),
                    Err((false, e)) => RelayEnd::ServerFailed(e),
                });
            }
            let s2c = &mut self.server_to_client;
            if let Poll::Ready(r) = s2c.poll_pump(
                cx,
                Pin::new(&mut *server),
                Pin::new(&mut *client),
                tap,
                timing,
            ) {
                return Poll::Ready(match r {
                    // The server closing after the client's Terminate is the client quitting:
                    // which end's EOF is seen first is a race.
                    Ok(PumpDone::Eof) if self.client_to_server.last_tag == TERMINATE => {
                        RelayEnd::ClientClosed { said_goodbye: true }
                    }
                    Ok(PumpDone::Eof) => RelayEnd::ServerClosed,
                    Err((_, RelayError::Recording(e))) => RelayEnd::RecordingFailed(e),
                    Err((true, e)) => RelayEnd::ServerFailed(e),
                    Err((false, e)) => RelayEnd::ClientFailed(e),
                });
            }
            Poll::Pending
        })
        .await
    }

    /// Bytes forwarded (client to server, server to client).
    pub fn bytes(&self) -> (u64, u64) {
        (self.client_to_server.bytes, self.server_to_client.bytes)
    }

    /// Ends the client's side with an error of our own: finishes writing whole messages already
    /// cut, then sends `error` if the client's stream is at a message boundary (otherwise the
    /// client would misread it, so the connection is just closed).
    pub async fn close_client_with<C>(
        &mut self,
        client: &mut C,
        error: &ErrorMessage,
    ) -> io::Result<()>
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        let pump = &mut self.server_to_client;
        if pump.at_message_boundary() {
            let pending = std::mem::take(&mut pump.out);
            client.write_all(&pending).await?;
            let mut msg = BytesMut::new();
            error.encode(&mut msg);
            client.write_all(&msg).await?;
        }
        client.flush().await?;
        client.shutdown().await
    }

    /// The FATAL error the server sent before closing, if it did.
    pub fn server_fatal(&self) -> Option<&str> {
        self.server_to_client.server_fatal.as_deref()
    }

    /// True when the client's last message was Terminate (so the server was told goodbye).
    pub fn client_said_goodbye(&self) -> bool {
        self.client_to_server.last_tag == TERMINATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, duplex};

    use crate::protocol::backend::put_message;
    use crate::store::SessionEnd;

    type Seen = Arc<Mutex<Vec<(Direction, u8, usize, usize)>>>;

    struct RecordingTap(Seen);

    impl SessionTap for RecordingTap {
        fn frame(&mut self, direction: Direction, frame: Frame) {
            self.0
                .lock()
                .unwrap()
                .push((direction, frame.tag, frame.body_len, frame.body.len()));
        }
        fn chunk_done(&mut self, _direction: Direction) -> Result<Release, RecordingFailed> {
            Ok(Release::Now)
        }
        fn poll_release(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RecordingFailed>> {
            Poll::Ready(Ok(()))
        }
        fn end(self: Box<Self>, _end: &SessionEnd) {}
    }

    fn msg(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_message(&mut out, tag, |b| b.extend_from_slice(body));
        out
    }

    #[tokio::test]
    async fn frames_pass_unchanged_both_ways_and_reach_the_tap() {
        let (mut client, mut gw_client) = duplex(64);
        let (mut gw_server, mut server) = duplex(64);
        let seen: Seen = Default::default();
        let relay_task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut tap: Option<Box<dyn SessionTap>> = Some(Box::new(RecordingTap(seen)));
                let mut relay = Relay::new(1 << 20, BytesMut::new(), BytesMut::new());
                let end = relay.run(&mut gw_client, &mut gw_server, &mut tap).await;
                (end, relay.bytes())
            })
        };
        let query = msg(b'Q', b"select 1\0");
        let terminate = msg(b'X', b"");
        // Pipelined, and split at awkward places by the small duplex buffers.
        let mut pipeline = query.to_vec();
        pipeline.extend_from_slice(&query);
        pipeline.extend_from_slice(&terminate);
        let reply = msg(b'Z', b"I");
        let big_row = msg(b'D', &vec![7u8; 3000]);
        let server_side = tokio::spawn(async move {
            let mut got = vec![0u8; pipeline_len()];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(&big_row).await.unwrap();
            server.write_all(&reply).await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            got
        });
        fn pipeline_len() -> usize {
            (5 + 9) * 2 + 5
        }
        client.write_all(&pipeline).await.unwrap();
        let mut back = vec![0u8; 5 + 3000 + 6];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back[0], b'D');
        assert_eq!(&back[5 + 3000..], &msg(b'Z', b"I")[..]);
        drop(client);
        let (end, bytes) = relay_task.await.unwrap();
        assert!(
            matches!(end, RelayEnd::ClientClosed { said_goodbye: true }),
            "{end:?}"
        );
        assert_eq!(server_side.await.unwrap(), pipeline);
        assert_eq!(bytes, (pipeline_len() as u64, (5 + 3000 + 6) as u64));
        let seen = seen.lock().unwrap();
        let tags: Vec<(Direction, u8)> = seen.iter().map(|s| (s.0, s.1)).collect();
        use Direction::*;
        assert_eq!(
            tags,
            vec![
                (ClientToServer, b'Q'),
                (ClientToServer, b'Q'),
                (ClientToServer, b'X'),
                (ServerToClient, b'D'),
                (ServerToClient, b'Z')
            ]
        );
        assert!(seen.iter().all(|s| s.2 == s.3), "all frames complete");
    }

    #[tokio::test]
    async fn a_server_closing_after_the_clients_terminate_is_the_client_quitting() {
        let (mut client, mut gw_client) = duplex(64);
        let (mut gw_server, mut server) = duplex(64);
        let relay_task = tokio::spawn(async move {
            let mut tap: Option<Box<dyn SessionTap>> = None;
            let mut relay = Relay::new(1 << 20, BytesMut::new(), BytesMut::new());
            relay.run(&mut gw_client, &mut gw_server, &mut tap).await
        });
        client.write_all(&msg(b'X', b"")).await.unwrap();
        // The server reads the Terminate and closes while the client's socket is still open:
        // the server's EOF is seen first.
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        drop(server);
        let end = relay_task.await.unwrap();
        assert!(
            matches!(end, RelayEnd::ClientClosed { said_goodbye: true }),
            "{end:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn oversized_server_message_streams_and_tap_sees_its_start() {
        let (mut client, mut gw_client) = duplex(1 << 16);
        let (mut gw_server, mut server) = duplex(1 << 16);
        let seen: Seen = Default::default();
        let tap_seen = seen.clone();
        let relay_task = tokio::spawn(async move {
            let mut tap: Option<Box<dyn SessionTap>> = Some(Box::new(RecordingTap(tap_seen)));
            let mut relay = Relay::new(1 << 20, BytesMut::new(), BytesMut::new());
            relay.run(&mut gw_client, &mut gw_server, &mut tap).await
        });
        let body = vec![42u8; STREAM_THRESHOLD * 3];
        let row = msg(b'D', &body);
        let writer = tokio::spawn(async move {
            server.write_all(&row).await.unwrap();
            drop(server);
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), 5 + body.len());
        assert!(got[5..].iter().all(|&b| b == 42));
        assert!(matches!(relay_task.await.unwrap(), RelayEnd::ServerClosed));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].2, body.len());
        assert!(seen[0].3 < body.len(), "only a prefix is held for the tap");
    }

    #[tokio::test]
    async fn client_message_over_the_limit_fails_the_client_side() {
        let (mut client, mut gw_client) = duplex(1024);
        let (mut gw_server, _server) = duplex(1024);
        let task = tokio::spawn(async move {
            let mut relay = Relay::new(100, BytesMut::new(), BytesMut::new());
            relay.run(&mut gw_client, &mut gw_server, &mut None).await
        });
        client.write_all(&msg(b'Q', &[b'a'; 200])).await.unwrap();
        let end = task.await.unwrap();
        assert!(matches!(
            end,
            RelayEnd::ClientFailed(RelayError::Protocol(ProtocolError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn negative_length_from_client_fails_cleanly() {
        let (mut client, mut gw_client) = duplex(1024);
        let (mut gw_server, _server) = duplex(1024);
        let task = tokio::spawn(async move {
            let mut relay = Relay::new(100, BytesMut::new(), BytesMut::new());
            relay.run(&mut gw_client, &mut gw_server, &mut None).await
        });
        client
            .write_all(&[b'Q', 0xff, 0xff, 0xff, 0xf0])
            .await
            .unwrap();
        assert!(matches!(
            task.await.unwrap(),
            RelayEnd::ClientFailed(RelayError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn client_vanishing_mid_message_is_reported_as_truncated() {
        let (mut client, mut gw_client) = duplex(1024);
        let (mut gw_server, _server) = duplex(1024);
        let task = tokio::spawn(async move {
            let mut relay = Relay::new(1000, BytesMut::new(), BytesMut::new());
            relay.run(&mut gw_client, &mut gw_server, &mut None).await
        });
        client
            .write_all(&msg(b'Q', b"select 1\0")[..7])
            .await
            .unwrap();
        drop(client);
        assert!(matches!(
            task.await.unwrap(),
            RelayEnd::ClientFailed(RelayError::Truncated)
        ));
    }
}

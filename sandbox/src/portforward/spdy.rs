//! SPDY/3.1 as kubectl's `port-forward` speaks it, tunnelled through a
//! websocket (subprotocol `SPDY/3.1+portforward.k8s.io`, what kubectl
//! 1.31 and later try first): the websocket's binary messages carry the
//! bytes of one SPDY session, in which kubectl is the client.
//!
//! What is served is what the kubelet's port-forward server does with a
//! session: for each connection to a local port kubectl opens two streams
//! (`SYN_STREAM`, headers `streamtype: error|data`, `port`, `requestid`);
//! the server answers each with a `SYN_REPLY`, dials the port when the
//! data stream opens, and copies bytes between the stream's `DATA` frames
//! and the connection; a `FIN` from the client half-closes the
//! connection, the connection's end is a `FIN` on the data stream, and
//! a failure is the kubelet's message on the error stream, which is then
//! closed too. `PING`s are answered. Header blocks are zlib streams with
//! SPDY/3's preset dictionary (`spdy3_dictionary.bin`, the bytes the
//! SPDY/3 draft specifies), one stream per direction across the session.
//!
//! Where it stops: no flow control (kubectl's SPDY library sends no
//! `WINDOW_UPDATE`s and honours none, and none are sent), no streams
//! opened by the server, no `SETTINGS`; `RST_STREAM` ends that stream's
//! forward. SPDY by a direct `Upgrade: SPDY/3.1` (kubectl's fallback, and
//! older kubectl) is not served.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::PodRef;

/// The websocket subprotocol of SPDY tunnelled for port-forward.
pub const PORT_FORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// SPDY/3's dictionary for header compression.
const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const FLAG_FIN: u8 = 0x01;

/// How long a port's connection is given to open.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// One SPDY frame.
#[derive(Debug, PartialEq)]
enum Frame {
    Control {
        kind: u16,
        flags: u8,
        data: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// Takes the first whole frame off `buf`, if there is one.
fn next_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 8 {
        return None;
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < 8 + len {
        return None;
    }
    let head: Vec<u8> = buf.drain(..8 + len).collect();
    let flags = head[4];
    let data = head[8..].to_vec();
    if head[0] & 0x80 != 0 {
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Some(Frame::Control { kind, flags, data })
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Some(Frame::Data {
            stream,
            flags,
            data,
        })
    }
}

fn control(kind: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

/// The header blocks of one direction: a zlib stream with the dictionary.
struct Headers {
    inflate: Decompress,
    deflate: Compress,
}

impl Headers {
    fn new() -> std::io::Result<Headers> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .map_err(std::io::Error::other)?;
        Ok(Headers {
            inflate: Decompress::new(true),
            deflate,
        })
    }

    /// The name/value pairs of a compressed block.
    fn decode(&mut self, block: &[u8]) -> std::io::Result<Vec<(String, String)>> {
        let mut plain = Vec::with_capacity(4096);
        let mut rest = block;
        loop {
            if plain.capacity() - plain.len() < 1024 {
                plain.reserve(4096);
            }
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(rest, &mut plain, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            rest = &rest[used..];
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(std::io::Error::other)?;
                }
                Err(e) => return Err(std::io::Error::other(e)),
                Ok(_) if rest.is_empty() => break,
                Ok(_) if used == 0 && plain.capacity() > plain.len() => {
                    return Err(std::io::Error::other("a truncated header block"));
                }
                Ok(_) => {}
            }
        }
        parse_pairs(&plain)
    }

    /// A compressed block of `pairs`.
    fn encode(&mut self, pairs: &[(&str, &str)]) -> std::io::Result<Vec<u8>> {
        let mut plain = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            for s in [k, v] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut rest = &plain[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            rest = &rest[(self.deflate.total_in() - before) as usize..];
            // A sync flush is complete when output room is left over.
            if rest.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn parse_pairs(plain: &[u8]) -> std::io::Result<Vec<(String, String)>> {
    let bad = || std::io::Error::other("a malformed header block");
    let mut at = 0usize;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        let s = plain.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(take(4)?);
    let mut pairs = vec![];
    for _ in 0..count {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_lowercase();
        let n = word(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// A client stream's role, from its headers.
struct Opened {
    id: u32,
    kind: String,
    port: Option<u16>,
    request: String,
}

fn opened(data: &[u8], headers: &mut Headers) -> std::io::Result<Opened> {
    if data.len() < 10 {
        return Err(std::io::Error::other("a short SYN_STREAM"));
    }
    let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff;
    let pairs = headers.decode(&data[10..])?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Ok(Opened {
        id,
        kind: get("streamtype"),
        port: get("port").parse().ok(),
        request: get("requestid"),
    })
}

/// Runs a tunnelled SPDY port-forward session until the client goes.
pub(crate) async fn serve_port_forward(socket: WebSocket, pod: PodRef) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let Ok(mut headers) = Headers::new() else {
        return;
    };
    let mut buf = vec![];
    // Data streams' inputs, and each request's error stream.
    let mut inputs: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut tasks = vec![];
    'session: while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Close(_) => break,
            _ => continue,
        }
        while let Some(frame) = next_frame(&mut buf) {
            match frame {
                Frame::Control {
                    kind: SYN_STREAM,
                    data,
                    ..
                } => {
                    // A header block that cannot be read leaves the
                    // session's compression state unknown: it ends.
                    let Ok(o) = opened(&data, &mut headers) else {
                        break 'session;
                    };
                    let Ok(block) = headers.encode(&[]) else {
                        break 'session;
                    };
                    let mut reply = o.id.to_be_bytes().to_vec();
                    reply.extend_from_slice(&block);
                    if out.send(control(SYN_REPLY, 0, &reply)).await.is_err() {
                        break 'session;
                    }
                    match o.kind.as_str() {
                        "error" => {
                            errors.insert(o.request, o.id);
                        }
                        "data" => {
                            let (tx, rx) = mpsc::channel(64);
                            inputs.insert(o.id, tx);
                            let error_stream = errors.remove(&o.request);
                            tasks.push(tokio::spawn(forward(
                                o.id,
                                error_stream,
                                o.port.unwrap_or(0),
                                pod.clone(),
                                rx,
                                out.clone(),
                            )));
                        }
                        _ => {}
                    }
                }
                Frame::Control {
                    kind: PING, data, ..
                } => {
                    if out.send(control(PING, 0, &data)).await.is_err() {
                        break 'session;
                    }
                }
                Frame::Control {
                    kind: RST_STREAM,
                    data,
                    ..
                } if data.len() >= 4 => {
                    let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff;
                    inputs.remove(&id);
                }
                Frame::Control { .. } => {}
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(tx) = inputs.get(&stream) {
                        if !data.is_empty() {
                            let _ = tx.send(Some(data)).await;
                        }
                        if flags & FLAG_FIN != 0 {
                            let _ = tx.send(None).await;
                            inputs.remove(&stream);
                        }
                    }
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Forwards one connection: dials the port, copies both ways, reports a
/// failure on the error stream and closes both streams.
async fn forward(
    data_stream: u32,
    error_stream: Option<u32>,
    port: u16,
    pod: PodRef,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let finish = |error: Option<String>| {
        let out = out.clone();
        async move {
            let _ = out.send(data_frame(data_stream, FLAG_FIN, &[])).await;
            if let Some(id) = error_stream {
                if let Some(message) = error {
                    let _ = out.send(data_frame(id, 0, message.as_bytes())).await;
                }
                let _ = out.send(data_frame(id, FLAG_FIN, &[])).await;
            }
        }
    };
    let tcp = match pod.dial(port, DIAL_TIMEOUT).await {
        Ok(s) => s,
        Err(message) => return finish(Some(message)).await,
    };
    let (mut read, mut write) = tcp.into_split();
    let to_pod = async move {
        while let Some(Some(data)) = from_client.recv().await {
            write.write_all(&data).await?;
        }
        write.shutdown().await
    };
    let out2 = out.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0
                || out2
                    .send(data_frame(data_stream, 0, &buf[..n]))
                    .await
                    .is_err()
            {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    tokio::pin!(to_pod);
    tokio::pin!(from_pod);
    // The pod's end of the connection ends the forward; the client's
    // half-close only closes the pod's input.
    let mut to_pod_done = false;
    let result = loop {
        tokio::select! {
            r = &mut to_pod, if !to_pod_done => {
                to_pod_done = true;
                if let Err(e) = r {
                    break Err(e);
                }
            }
            r = &mut from_pod => break r,
        }
    };
    finish(result.err().map(|e| pod.copy_error(port, &e))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        // SPDY/3's dictionary id (its Adler-32), as zlib streams name it.
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(c.set_dictionary(DICTIONARY).ok(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn header_blocks_round_trip_across_one_stream_per_direction() {
        let mut client = Headers::new().expect("zlib");
        let mut server = Headers::new().expect("zlib");
        for request in ["0", "1"] {
            let block = client
                .encode(&[
                    ("streamtype", "data"),
                    ("port", "5432"),
                    ("requestid", request),
                ])
                .expect("encoded");
            let pairs = server.decode(&block).expect("decoded");
            assert_eq!(
                pairs,
                [
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".into(), "5432".into()),
                    ("requestid".into(), request.into())
                ]
            );
        }
    }

    #[test]
    fn frames_are_cut_from_the_byte_stream() {
        let mut buf = control(PING, 0, &[0, 0, 0, 1]);
        buf.extend(data_frame(3, FLAG_FIN, b"hi"));
        buf.extend_from_slice(&[0x80]);
        assert_eq!(
            next_frame(&mut buf),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                data: vec![0, 0, 0, 1]
            })
        );
        assert_eq!(
            next_frame(&mut buf),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hi".to_vec()
            })
        );
        assert_eq!(next_frame(&mut buf), None);
        assert_eq!(buf, [0x80]);
    }
}

//! A minimal XMPP client (RFC 6120) for timing a lab server from a user's side: plain TCP on
//! loopback, SASL PLAIN, resource binding, then XEP-0199 pings to the server, one at a time.
//!
//! No TLS: the lab server must allow it (`c2s_require_encryption = false`,
//! `allow_unencrypted_plain_auth = true`), which is only sound on loopback. The XML handling
//! is just enough for Prosody's replies: the client looks for the elements it waits for in the
//! bytes read so far and never needs a full parser.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// A logged-in c2s session.
pub struct C2s {
    sock: TcpStream,
    buf: Vec<u8>,
    host: String,
    /// The full JID the server bound.
    pub jid: String,
    next_id: u64,
}

impl C2s {
    /// Connects to `addr` (`ip:5222`), authenticates `user@host` with `password` and binds a
    /// resource. Each wait is bounded by `timeout`.
    pub fn login(
        addr: &str,
        host: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<C2s, String> {
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = C2s { sock, buf: Vec::new(), host: host.to_owned(), jid: String::new(), next_id: 0 };
        c.open_stream(timeout)?;
        let features = c.read_until("</stream:features>", timeout)?;
        if !features.contains("PLAIN") {
            return Err(format!("the server offers no SASL PLAIN (TLS required?): {features}"));
        }
        let creds = base64(format!("\0{user}\0{password}").as_bytes());
        c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"))?;
        let answer = c.read_until_any(&["<success", "<failure"], timeout)?;
        if answer.contains("<failure") {
            return Err(format!("SASL PLAIN failed for {user}@{host}: {answer}"));
        }
        c.buf.clear(); // the stream restarts after <success/>
        c.open_stream(timeout)?;
        c.read_until("</stream:features>", timeout)?;
        c.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>flood</resource></bind></iq>",
        )?;
        let bound = c.read_until("</iq>", timeout)?;
        c.jid =
            between(&bound, "<jid>", "</jid>").ok_or_else(|| format!("no bound JID in {bound}"))?.to_owned();
        Ok(c)
    }

    fn open_stream(&mut self, timeout: Duration) -> Result<(), String> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
            self.host
        ))?;
        self.read_until("<stream:stream", timeout).map(drop)
    }

    fn send(&mut self, xml: &str) -> Result<(), String> {
        self.sock.write_all(xml.as_bytes()).map_err(|e| format!("send: {e}"))
    }

    fn read_until(&mut self, what: &str, timeout: Duration) -> Result<String, String> {
        self.read_until_any(&[what], timeout)
    }

    /// Reads until one of `whats` (then up to the next `>`) has arrived; returns the text up
    /// to there and keeps the rest for the next call.
    fn read_until_any(&mut self, whats: &[&str], timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let hit = whats.iter().filter_map(|w| find(&self.buf, w.as_bytes()).map(|i| (i, w.len()))).min();
            if let Some((i, len)) = hit
                && let Some(gt) = self.buf[i + len - 1..].iter().position(|&b| b == b'>')
            {
                let end = i + len + gt;
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end);
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {whats:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
            self.sock.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "server closed the stream: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// One XEP-0199 ping to the server and its answer; returns the round trip. An error reply
    /// counts as an answer too (the server did process the IQ), a missing one is an error.
    pub fn ping(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.next_id += 1;
        let id = format!("p{}", self.next_id);
        let t0 = Instant::now();
        self.send(&format!(
            "<iq type='get' id='{id}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            self.host
        ))?;
        // Prosody writes attributes with single quotes; accept double quotes as well.
        let (q1, q2) = (format!("id='{id}'"), format!("id=\"{id}\""));
        loop {
            let got = self.read_until_any(&[&q1, &q2], timeout)?;
            // Only the answer to this ping ends the wait (anything else pushed is skipped).
            let start = got.rfind("<iq").unwrap_or(0);
            if got[start..].contains(&q1) || got[start..].contains(&q2) {
                return Ok(t0.elapsed());
            }
        }
    }

    /// Closes the stream.
    pub fn close(mut self) {
        let _ = self.send("</stream:stream>");
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close)? + i;
    Some(&s[i..j])
}

/// Standard base64 with padding (RFC 4648 §4), for the SASL PLAIN message.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"\0flood\0secret"), "AGZsb29kAHNlY3JldA==");
    }
}

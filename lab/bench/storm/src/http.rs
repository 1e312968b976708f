//! The HTTP side of a simulated machine: one HTTP/1.1 request per connection from the
//! machine's own address, as iPXE and an installer's curl make them. Bodies are read whole
//! (Content-Length or chunked); the status and the body come back.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

pub struct Answer {
    pub status: u16,
    /// The body, when the caller keeps it (scripts, kickstarts); empty otherwise.
    pub body: Vec<u8>,
    /// Bytes after the headers (the body as sent, with any chunk framing).
    pub length: u64,
}

/// `http://host:port/path` as (address, path).
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = if authority.contains(':') {
        authority.parse().map_err(|e| format!("{url}: {e}"))?
    } else {
        SocketAddr::new(authority.parse().map_err(|e| format!("{url}: {e}"))?, 80)
    };
    Ok((addr, if path.is_empty() { "/".into() } else { path.into() }))
}

/// `method` `url` from `from`, with `body` (POST). With `keep` false the body is counted
/// and dropped as it arrives (thousands of machines fetching kernels at once must not
/// hold them in memory).
pub async fn call(from: Ipv4Addr, method: &str, url: &str, body: &str, keep: bool) -> Result<Answer, String> {
    let (addr, path) = parse_url(url)?;
    let exchange = async {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind((from, 0).into()).map_err(|e| format!("bind {from}: {e}"))?;
        let mut stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: provd-storm\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut dropped: u64 = 0;
        let mut head_len: Option<usize> = None;
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            if head_len.is_some() && !keep {
                dropped += n as u64;
                continue;
            }
            raw.extend_from_slice(&chunk[..n]);
            if head_len.is_none() {
                head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                if let Some(h) = head_len
                    && !keep
                {
                    dropped += (raw.len() - h) as u64;
                    raw.truncate(h);
                }
            }
        }
        let mut answer = decode(&raw, keep)?;
        answer.length += dropped;
        if !keep && let Some(expected) = answer.declared {
            if answer.length < expected {
                return Err(format!("body cut short: {} of {expected} bytes", answer.length));
            }
        }
        Ok(answer.answer())
    };
    tokio::time::timeout(Duration::from_secs(300), exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer in 300 s"))?
        .map_err(|e| format!("{method} {url}: {e}"))
}

/// A decoded response and the length its headers declared.
struct Decoded {
    status: u16,
    body: Vec<u8>,
    length: u64,
    declared: Option<u64>,
}

impl Decoded {
    fn answer(self) -> Answer {
        Answer {
            status: self.status,
            body: self.body,
            length: self.length,
        }
    }
}

/// The response in `raw` (headers, and the body when `keep`).
fn decode(raw: &[u8], keep: bool) -> Result<Decoded, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the connection closed before the headers ended")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
    };
    let rest = &raw[end + 4..];
    let declared = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let body = if !keep {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else {
        match declared {
            Some(n) if (rest.len() as u64) < n => return Err(format!("body cut short: {} of {n} bytes", rest.len())),
            Some(n) => rest[..n as usize].to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Decoded {
        status,
        body,
        length: rest.len() as u64,
        declared,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_length_and_chunked_bodies() {
        let a = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
        let c = decode(
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!((c.status, c.body.as_slice()), (403, &b"abcde"[..]));
        assert!(decode(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", true).is_err());
        let counted = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", false).unwrap();
        assert_eq!((counted.length, counted.declared, counted.body.len()), (5, Some(9), 0));
        assert_eq!(
            parse_url("http://10.0.0.1:8080/boot/x.ipxe").unwrap(),
            ("10.0.0.1:8080".parse().unwrap(), "/boot/x.ipxe".to_string())
        );
    }
}

//! The pure half of zero-copy asset serving: which requests the `sendfile` path may answer
//! itself, and the response head it writes. No I/O here (`zero_copy` does that).
//!
//! Only the plain, common shape qualifies: an HTTP/1.1 `GET` or `HEAD` of `/assets/...`
//! with no body, no conditional headers and at most one satisfiable byte range: what iPXE,
//! curl and Anaconda send for kernels and images. Everything else (percent-escapes, query
//! strings, `If-*`, several ranges, HTTP/1.0, an unsatisfiable range) is `Other` and goes
//! to the router unchanged (tower-http's `ServeFile`), so the answers to unusual requests
//! are exactly what they were.

use std::time::SystemTime;

/// The longest request head the fast path reads before it hands the connection over.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A request the fast path serves.
    Asset(AssetRequest),
    /// Anything else: the router answers it.
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AssetRequest {
    /// Bytes of the buffer the head took (a pipelined next request starts here).
    pub head_len: usize,
    pub head_only: bool,
    /// The path below `/assets/`, as sent (no escapes by construction).
    pub path: String,
    /// The `Range` header's value, when there was one.
    pub range: Option<String>,
    /// The client asked to close after this response.
    pub close: bool,
}

pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        // Too long, too many headers, or not HTTP: the router gives the right error.
        _ => return Parsed::Other,
    };
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let Some(path) = req.path.and_then(|p| p.strip_prefix("/assets/")) else {
        return Parsed::Other;
    };
    if path.is_empty() || path.contains(['%', '?', '#']) {
        return Parsed::Other;
    }
    let mut range = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Parsed::Other;
        };
        match name.as_str() {
            "range" if range.is_none() => range = Some(value.trim().to_string()),
            "content-length" if value.trim() == "0" => {}
            "connection" => match value.trim().to_ascii_lowercase().as_str() {
                "close" => close = true,
                "keep-alive" => {}
                _ => return Parsed::Other,
            },
            // A body, a second Range, an upgrade, an expectation, or a condition: the router.
            "range" | "content-length" | "transfer-encoding" | "upgrade" | "expect" => return Parsed::Other,
            n if n.starts_with("if-") => return Parsed::Other,
            _ => {}
        }
    }
    Parsed::Asset(AssetRequest {
        head_len,
        head_only,
        path: path.to_string(),
        range,
        close,
    })
}

/// The bytes to send of a file of `size`: all of it, or one inclusive range. `None` when
/// the range is not one satisfiable range (the router answers 416 or the multipart refusal).
pub fn byte_range(range: Option<&str>, size: u64) -> Option<Extent> {
    let Some(value) = range else {
        return Some(Extent::Full);
    };
    if size == 0 {
        return None;
    }
    let ranges = http_range_header::parse_range_header(value).ok()?.validate(size).ok()?;
    match ranges.as_slice() {
        [one] => Some(Extent::Part {
            start: *one.start(),
            end: *one.end(),
        }),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Full,
    /// Inclusive, as `Content-Range` writes it.
    Part {
        start: u64,
        end: u64,
    },
}

impl Extent {
    /// (first byte, how many bytes) of a file of `size`.
    pub fn span(self, size: u64) -> (u64, u64) {
        match self {
            Extent::Full => (0, size),
            Extent::Part { start, end } => (start, end - start + 1),
        }
    }
}

/// What the head says about the file.
pub struct FileFacts<'a> {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub content_type: &'a str,
}

/// The response head: the same headers tower-http's `ServeFile` sends for these requests
/// (type, ranges accepted, length, last-modified, an ETag of mtime and size), plus `date`
/// as hyper adds, and `connection: close` when the client asked for it.
pub fn response_head(file: &FileFacts<'_>, extent: Extent, close: bool, now: SystemTime) -> Vec<u8> {
    use std::fmt::Write;
    let (_, length) = extent.span(file.size);
    let mut h = String::with_capacity(320);
    match extent {
        Extent::Full => h.push_str("HTTP/1.1 200 OK\r\n"),
        Extent::Part { start, end } => {
            let _ = write!(
                h,
                "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {start}-{end}/{}\r\n",
                file.size
            );
        }
    }
    let _ = write!(
        h,
        "content-type: {}\r\naccept-ranges: bytes\r\ncontent-length: {length}\r\n",
        file.content_type
    );
    if let Some(m) = file.modified {
        let _ = write!(h, "last-modified: {}\r\n", httpdate::fmt_http_date(m));
        if let Ok(d) = m.duration_since(SystemTime::UNIX_EPOCH) {
            // Opaque to clients (RFC 9110 §8.8.3); mtime and size, so a changed file is
            // a new tag.
            let _ = write!(
                h,
                "etag: \"{:x}.{:08x}-{:x}\"\r\n",
                d.as_secs(),
                d.subsec_nanos(),
                file.size
            );
        }
    }
    if close {
        h.push_str("connection: close\r\n");
    }
    let _ = write!(h, "date: {}\r\n\r\n", httpdate::fmt_http_date(now));
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(buf: &str) -> AssetRequest {
        match parse(buf.as_bytes()) {
            Parsed::Asset(a) => a,
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    #[test]
    fn plain_gets_and_heads_of_assets_qualify() {
        let two = "GET /assets/el9/vmlinuz HTTP/1.1\r\nHost: x\r\nUser-Agent: iPXE/1.21\r\n\r\nGET /next";
        let a = asset(two);
        assert_eq!(a.path, "el9/vmlinuz");
        assert_eq!(
            a.head_len,
            two.find("GET /next").unwrap(),
            "the pipelined request after it is not part of the head"
        );
        assert!(!a.head_only && !a.close && a.range.is_none());
        let h = asset("HEAD /assets/x HTTP/1.1\r\nRange: bytes=0-9\r\nConnection: Close\r\n\r\n");
        assert!(h.head_only && h.close);
        assert_eq!(h.range.as_deref(), Some("bytes=0-9"));
        assert_eq!(parse(b"GET /assets/x HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
    }

    #[test]
    fn everything_unusual_goes_to_the_router() {
        for req in [
            "POST /assets/x HTTP/1.1\r\n\r\n",
            "GET /assets/x HTTP/1.0\r\n\r\n",
            "GET /boot/x.ipxe HTTP/1.1\r\n\r\n",
            "GET /assets/ HTTP/1.1\r\n\r\n",
            "GET /assets/a%2e%2e/x HTTP/1.1\r\n\r\n",
            "GET /assets/x?y HTTP/1.1\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nif-none-match: \"a\"\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /assets/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "NOT HTTP AT ALL\r\n\r\n",
        ] {
            assert_eq!(parse(req.as_bytes()), Parsed::Other, "{req:?}");
        }
        // A head that never ends within the limit is not waited for.
        let long = format!("GET /assets/x HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()), Parsed::Other);
    }

    #[test]
    fn one_satisfiable_range_or_the_router() {
        assert_eq!(byte_range(None, 10), Some(Extent::Full));
        assert_eq!(
            byte_range(Some("bytes=2-4"), 10),
            Some(Extent::Part { start: 2, end: 4 })
        );
        assert_eq!(
            byte_range(Some("bytes=-3"), 10),
            Some(Extent::Part { start: 7, end: 9 })
        );
        assert_eq!(
            byte_range(Some("bytes=8-"), 10),
            Some(Extent::Part { start: 8, end: 9 })
        );
        assert_eq!(Extent::Part { start: 8, end: 9 }.span(10), (8, 2));
        for unusual in ["bytes=0-1,4-5", "bytes=20-30", "lines=1-2", "bytes=5-2"] {
            assert_eq!(byte_range(Some(unusual), 10), None, "{unusual}");
        }
        assert_eq!(byte_range(Some("bytes=0-0"), 0), None, "an empty file's range");
    }

    #[test]
    fn the_head_says_what_serve_file_says() {
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let file = FileFacts {
            size: 10,
            modified: Some(modified),
            content_type: "application/octet-stream",
        };
        let head = String::from_utf8(response_head(&file, Extent::Part { start: 2, end: 4 }, true, modified)).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 2-4/10\r\n"),
            "{head}"
        );
        for line in [
            "content-length: 3\r\n",
            "accept-ranges: bytes\r\n",
            "last-modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n",
            "etag: \"6553f100.00000005-a\"\r\n",
            "connection: close\r\n",
        ] {
            assert!(head.contains(line), "{line:?} in {head}");
        }
        assert!(head.ends_with("GMT\r\n\r\n"));
        let full = String::from_utf8(response_head(&file, Extent::Full, false, modified)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n") && full.contains("content-length: 10\r\n"));
        assert!(!full.contains("connection"));
    }
}

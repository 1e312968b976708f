//! `Connection`: one connection to the failover partner (TCP, or TLS over TCP between two
//! provds), as whole messages (the framing half of the conversation, in the style of
//! mini-redis's `connection.rs`). It knows the wire format's length prefix and nothing of
//! the protocol's meaning.
//!
//! `read_message` is cancel-safe (a `select!` may drop it at any await: bytes already read
//! stay in the buffer), so one task can wait for the partner and do everything else.

use super::FailoverError;
use super::codec::{self, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream to the partner: a TCP stream or a TLS stream over one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Connection {
    stream: Box<dyn Stream>,
    /// Bytes read but not yet a whole message.
    buffer: Vec<u8>,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        // Failover messages are small and latency-bound (every BNDUPD waits for its BNDACK).
        let _ = stream.set_nodelay(true);
        Self::over(Box::new(stream))
    }

    /// Over a stream already set up (TLS over a TCP stream `new` would have tuned).
    pub fn over(stream: Box<dyn Stream>) -> Self {
        Connection {
            stream,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// The next whole message; `Ok(None)` when the partner closed the connection cleanly
    /// between messages. A bad length or a message that does not decode is an error (the
    /// caller drops the connection: the stream cannot be resynchronised).
    pub async fn read_message(&mut self) -> Result<Option<Message>, FailoverError> {
        loop {
            if let Some(m) = self.parse_buffered()? {
                return Ok(Some(m));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FailoverError::Closed("the partner closed the connection mid-message"))
                };
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// A whole message out of the buffer, if one is there.
    fn parse_buffered(&mut self) -> Result<Option<Message>, FailoverError> {
        match codec::frame_len(&self.buffer)? {
            Some(n) if self.buffer.len() >= n => {
                let msg = Message::decode(&self.buffer[..n])?;
                self.buffer.drain(..n);
                Ok(Some(msg))
            }
            _ => Ok(None),
        }
    }

    pub async fn write_message(&mut self, m: &Message) -> Result<(), FailoverError> {
        let bytes = m.encode()?;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    pub async fn shutdown(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::codec::{MessageType, Value, code};

    async fn pair() -> (Connection, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Connection::new(server), client)
    }

    #[tokio::test]
    async fn messages_split_across_reads_and_joined_in_one_arrive_whole() {
        let (mut conn, mut raw) = pair().await;
        let a = Message::new(MessageType::Contact, 1, 7);
        let b = Message::new(MessageType::State, 2, 8).with(code::SERVER_STATE, Value::U8(2));
        let (ea, eb) = (a.encode().unwrap(), b.encode().unwrap());
        // The first message in two pieces, the second glued to the end of the first.
        raw.write_all(&ea[..5]).await.unwrap();
        raw.flush().await.unwrap();
        tokio::task::yield_now().await;
        let mut rest = ea[5..].to_vec();
        rest.extend_from_slice(&eb);
        raw.write_all(&rest).await.unwrap();
        assert_eq!(conn.read_message().await.unwrap().unwrap().xid, 7);
        let got = conn.read_message().await.unwrap().unwrap();
        assert_eq!((got.kind, got.u8(code::SERVER_STATE)), (MessageType::State, Some(2)));
        drop(raw);
        assert!(conn.read_message().await.unwrap().is_none(), "clean close");
    }

    #[tokio::test]
    async fn an_impossible_length_or_a_cut_message_is_an_error() {
        let (mut conn, mut raw) = pair().await;
        raw.write_all(&[0xff, 0xff, 0, 0]).await.unwrap();
        assert!(matches!(conn.read_message().await, Err(FailoverError::Decode(_))));

        let (mut conn, mut raw) = pair().await;
        let m = Message::new(MessageType::Contact, 1, 7).encode().unwrap();
        raw.write_all(&m[..m.len() - 1]).await.unwrap();
        drop(raw);
        assert!(matches!(conn.read_message().await, Err(FailoverError::Closed(_))));
    }

    #[tokio::test]
    async fn written_messages_decode_on_the_other_side() {
        let (mut conn, mut raw) = pair().await;
        let m = Message::new(MessageType::PoolResp, 3, 9).with(code::ADDRESSES_TRANSFERRED, Value::U32(5));
        conn.write_message(&m).await.unwrap();
        let mut buf = vec![0u8; m.encode().unwrap().len()];
        raw.read_exact(&mut buf).await.unwrap();
        assert_eq!(Message::decode(&buf).unwrap().u32(code::ADDRESSES_TRANSFERRED), Some(5));
    }
}

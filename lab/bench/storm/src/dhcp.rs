//! The DHCP side of a simulated machine: DISCOVER/OFFER/REQUEST/ACK as a PXE ROM (option
//! 93, vendor class "PXEClient") or as iPXE (user class "iPXE") sends them, broadcast, with a
//! ROM's retransmission schedule. One socket on port 68 serves every machine: a dispatcher
//! hands each answer to the machine whose transaction id it carries.

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Which firmware is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The NIC's PXE ROM: architecture 0 (BIOS), vendor class PXEClient.
    Rom,
    /// iPXE, loaded by the ROM: the same plus user class "iPXE".
    Ipxe,
}

/// What an ACK gave the machine.
#[derive(Debug, Clone)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    /// The boot file (TFTP name or http:// URL), if any.
    pub file: Option<String>,
}

/// The shared client socket and the machines waiting on it, by transaction id.
pub struct Clients {
    socket: Arc<UdpSocket>,
    waiting: Mutex<HashMap<u32, mpsc::Sender<Message>>>,
    pub malformed: std::sync::atomic::AtomicU64,
}

impl Clients {
    pub async fn bind() -> std::io::Result<Arc<Clients>> {
        let socket = UdpSocket::bind("0.0.0.0:68").await?;
        socket.set_broadcast(true)?;
        let clients = Arc::new(Clients {
            socket: Arc::new(socket),
            waiting: Mutex::new(HashMap::new()),
            malformed: Default::default(),
        });
        tokio::spawn(clients.clone().dispatch());
        Ok(clients)
    }

    async fn dispatch(self: Arc<Self>) {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, _)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                self.malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            let to = self.waiting.lock().unwrap().get(&msg.xid()).cloned();
            if let Some(tx) = to {
                let _ = tx.try_send(msg);
            }
        }
    }

    /// DORA for `mac` at `stage`, with a PXE ROM's timeouts (4, 8, 16, 32 s per try).
    pub async fn dora(&self, mac: [u8; 6], xid_base: u32, stage: Stage) -> Result<Lease, String> {
        let (tx, mut rx) = mpsc::channel(8);
        let xid = xid_base;
        self.waiting.lock().unwrap().insert(xid, tx);
        let result = async {
            let offer = self
                .exchange(&mut rx, &request(mac, xid, stage, MessageType::Discover, None), MessageType::Offer)
                .await
                .map_err(|e| format!("DISCOVER: {e}"))?;
            let server = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => return Err("OFFER without a server identifier".to_string()),
            };
            let chosen = Some((offer.yiaddr(), server));
            let ack = self
                .exchange(&mut rx, &request(mac, xid, stage, MessageType::Request, chosen), MessageType::Ack)
                .await
                .map_err(|e| format!("REQUEST: {e}"))?;
            let file = ack
                .fname()
                .map(|f| String::from_utf8_lossy(f).trim_end_matches('\0').to_string())
                .filter(|f| !f.is_empty());
            Ok(Lease {
                address: ack.yiaddr(),
                server,
                file,
            })
        }
        .await;
        self.waiting.lock().unwrap().remove(&xid);
        result
    }

    /// Send `msg` until an answer of `want` comes (a NAK ends it).
    async fn exchange(&self, rx: &mut mpsc::Receiver<Message>, msg: &[u8], want: MessageType) -> Result<Message, String> {
        let to = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        for wait in [4, 8, 16, 32] {
            self.socket.send_to(msg, to).await.map_err(|e| e.to_string())?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Err(_) => break,
                    Ok(None) => return Err("dispatcher gone".into()),
                    Ok(Some(m)) => match message_type(&m) {
                        Some(t) if t == want => return Ok(m),
                        Some(MessageType::Nak) => return Err("NAK".into()),
                        _ => continue,
                    },
                }
            }
        }
        Err("no answer after 4 tries (60 s)".into())
    }
}

fn message_type(m: &Message) -> Option<MessageType> {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
    }
}

/// A DISCOVER, or a REQUEST for `chosen` (address, server), as `stage` sends it.
fn request(mac: [u8; 6], xid: u32, stage: Stage, kind: MessageType, chosen: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest);
    m.set_xid(xid);
    m.set_chaddr(&mac);
    m.set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::X86_Bios));
    opts.insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()));
    if stage == Stage::Ipxe {
        opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::BootfileName,
    ]));
    if let Some((address, server)) = chosen {
        opts.insert(DhcpOption::RequestedIpAddress(address));
        opts.insert(DhcpOption::ServerIdentifier(server));
    }
    let mut b = Vec::with_capacity(300);
    m.encode(&mut Encoder::new(&mut b)).expect("a DHCP message encodes");
    b
}

//! From a packet to a reply: parse the query, answer it from the index or hand it to the
//! forwarder, encode the answer within the transport's size. No I/O, so the parser can be
//! fuzzed and the rules tested without sockets.
//!
//! Hostile input: a packet too short to carry a header, or that is a response, is dropped
//! (answering responses invites loops); one with a header but no parsable question gets
//! FORMERR; anything we do not serve gets NOTIMP or REFUSED. Nothing panics.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

use crate::answer::{Answer, Resolution, Zone, resolve};
use crate::index::Index;

/// What EDNS payload we offer and accept at most over UDP (the DNS flag day's 1232).
pub const EDNS_PAYLOAD: u16 = 1232;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What became of a packet.
#[derive(Debug)]
pub enum Handled {
    Reply(Reply),
    /// For the upstream resolvers: the request, and what we answer before their part (a
    /// CNAME chain of ours, for an ExternalName).
    Forward(Box<Forward>),
    Drop,
}

#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub qtype: Option<RecordType>,
    pub rcode: ResponseCode,
}

#[derive(Debug)]
pub struct Forward {
    pub request: Message,
    pub query: Query,
    pub prefix: Vec<Record>,
}

/// The request's first question, lowercased, and its type: a cache key.
pub fn question_key(request: &Message) -> Option<(Name, RecordType)> {
    let q = request.queries.first()?;
    Some((q.name().to_lowercase(), q.query_type()))
}

pub fn handle(packet: &[u8], transport: Transport, zone: &Zone, index: &Index) -> Handled {
    let request = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return format_error(packet),
    };
    if request.metadata.message_type != MessageType::Query {
        return Handled::Drop;
    }
    let qtype = request.queries.first().map(Query::query_type);
    let refuse = |rcode: ResponseCode| Handled::Reply(error_reply(&request, rcode, transport));
    if request.metadata.op_code != OpCode::Query {
        return refuse(ResponseCode::NotImp);
    }
    if request.queries.len() != 1 {
        return refuse(ResponseCode::FormErr);
    }
    if let Some(edns) = &request.edns
        && edns.version() > 0
    {
        return refuse(ResponseCode::BADVERS);
    }
    let query = request.queries[0].clone();
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return refuse(ResponseCode::Refused);
    }
    if matches!(
        query.query_type(),
        RecordType::AXFR | RecordType::IXFR | RecordType::OPT
    ) {
        return refuse(ResponseCode::Refused);
    }
    match resolve(zone, index, query.name(), query.query_type()) {
        Resolution::Elsewhere => Handled::Forward(Box::new(Forward {
            request,
            query,
            prefix: vec![],
        })),
        Resolution::Answer(Answer {
            chase: Some(target),
            answers,
            ..
        }) => {
            let query = Query::query(target, query.query_type());
            Handled::Forward(Box::new(Forward {
                request,
                query,
                prefix: answers,
            }))
        }
        Resolution::Answer(answer) => {
            let rcode = answer.rcode;
            let mut msg = response(&request, rcode);
            msg.metadata.authoritative = true;
            msg.answers = answer.answers;
            msg.authorities = answer.authority;
            msg.additionals = answer.additional;
            Handled::Reply(Reply {
                bytes: encode(msg, &request, transport),
                qtype,
                rcode,
            })
        }
    }
}

/// The reply to a forwarded request, from the upstream's answer (`None`: none came).
pub fn forwarded(forward: &Forward, upstream: Option<&Message>, transport: Transport) -> Reply {
    let request = &forward.request;
    let qtype = request.queries.first().map(Query::query_type);
    let Some(up) = upstream else {
        return error_reply(request, ResponseCode::ServFail, transport);
    };
    let rcode = up.metadata.response_code;
    let mut msg = response(request, rcode);
    msg.answers = forward.prefix.clone();
    msg.answers.extend(up.answers.iter().cloned());
    msg.authorities = up.authorities.clone();
    msg.additionals = up.additionals.clone();
    Reply {
        bytes: encode(msg, request, transport),
        qtype,
        rcode,
    }
}

fn response(request: &Message, rcode: ResponseCode) -> Message {
    let mut msg = Message::response(request.metadata.id, request.metadata.op_code);
    msg.metadata.recursion_desired = request.metadata.recursion_desired;
    msg.metadata.checking_disabled = request.metadata.checking_disabled;
    msg.metadata.recursion_available = true;
    msg.metadata.response_code = rcode;
    msg.add_queries(request.queries.iter().cloned());
    msg
}

fn error_reply(request: &Message, rcode: ResponseCode, transport: Transport) -> Reply {
    Reply {
        bytes: encode(response(request, rcode), request, transport),
        qtype: request.queries.first().map(Query::query_type),
        rcode,
    }
}

/// The most a reply may be: 512 bytes over UDP without EDNS, what the client offers with it
/// (within 512..=1232), 64 KiB over TCP.
fn limit(request: &Message, transport: Transport) -> usize {
    match (transport, &request.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
    }
}

/// Encode, with an OPT record when the client sent one, truncated (TC, no records) when too
/// large for the transport, so the client asks again over TCP.
fn encode(mut msg: Message, request: &Message, transport: Transport) -> Vec<u8> {
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns.set_version(0);
        msg.set_edns(edns);
    }
    let max = limit(request, transport);
    match msg.to_vec() {
        Ok(bytes) if bytes.len() <= max => bytes,
        _ => {
            let mut short = msg.truncate();
            short.metadata.truncation = true;
            short.to_vec().unwrap_or_else(|_| header_only(&msg))
        }
    }
}

/// The header of `msg` with no sections: what is left when even the question cannot be
/// encoded.
fn header_only(msg: &Message) -> Vec<u8> {
    let m = &msg.metadata;
    let mut b = vec![0u8; 12];
    b[..2].copy_from_slice(&m.id.to_be_bytes());
    b[2] = 0x80 | (u8::from(m.op_code) << 3) | 0x02 | u8::from(m.recursion_desired);
    b[3] = 0x80 | (m.response_code.low() & 0x0f);
    b
}

/// FORMERR for a packet with a header we can read (a query's), else nothing.
fn format_error(packet: &[u8]) -> Handled {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Handled::Drop;
    }
    let opcode = (packet[2] >> 3) & 0x0f;
    let rd = packet[2] & 0x01;
    let mut b = vec![0u8; 12];
    b[..2].copy_from_slice(&packet[..2]);
    b[2] = 0x80 | (opcode << 3) | rd;
    b[3] = 0x80 | ResponseCode::FormErr.low();
    Handled::Reply(Reply {
        bytes: b,
        qtype: None,
        rcode: ResponseCode::FormErr,
    })
}

/// Answers already encoded, by question, for as long as the index has not changed: most
/// queries then cost a hash lookup and a copy, not a parse, a lookup and an encoding. One per
/// thread (no lock); the key is everything of a query the answer depends on.
pub struct AnswerCache {
    entries: std::collections::HashMap<Vec<u8>, (u64, Vec<u8>)>,
    key: Vec<u8>,
}

/// Answers kept at most; past that the cache starts again (it only saves work).
const CACHE_ENTRIES: usize = 50_000;

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            entries: std::collections::HashMap::new(),
            key: Vec::with_capacity(300),
        }
    }
}

/// Where a simple query's name ends (exclusive) and its cache key, if it is one: a standard
/// query, one question of class IN, no records but an optional OPT of EDNS version 0. Every
/// other packet takes the full path.
fn simple_query(packet: &[u8], transport: Transport, key: &mut Vec<u8>) -> Option<usize> {
    if packet.len() < 17 {
        return None;
    }
    let flags = packet[2];
    // QR clear, opcode QUERY; the counts: 1 question, no answers or authority, 0-1 extra.
    if flags & 0xf8 != 0 || packet[4..10] != [0, 1, 0, 0, 0, 0] || packet[10] != 0 || packet[11] > 1
    {
        return None;
    }
    key.clear();
    let mut i = 12;
    loop {
        let len = usize::from(*packet.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        // A compression pointer, or a label longer than 63: not simple.
        if len > 63 || i + 1 + len > packet.len() || i + 1 + len > 12 + 255 {
            return None;
        }
        key.push(len as u8);
        key.extend(
            packet[i + 1..i + 1 + len]
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        i += 1 + len;
    }
    let name_end = i;
    let qtype_class = packet.get(i..i + 4)?;
    // Class IN only; zone transfers and OPT as a question take the full path.
    if qtype_class[2..] != [0, 1] || matches!(qtype_class[..2], [0, 252] | [0, 251] | [0, 41]) {
        return None;
    }
    key.push(0);
    key.extend_from_slice(&qtype_class[..2]);
    i += 4;
    // RD and CD are echoed; the transport and the client's EDNS size bound the answer.
    key.push(flags & 0x01);
    key.push(packet[3] & 0x10);
    key.push(u8::from(transport == Transport::Tcp));
    if packet[11] == 1 {
        // OPT: root name, type 41, class = payload size, TTL = ext rcode, version, flags.
        let opt = packet.get(i..i + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 {
            return None;
        }
        let payload = u16::from_be_bytes([opt[3], opt[4]]).clamp(512, EDNS_PAYLOAD);
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if i + 11 + rdlen != packet.len() {
            return None;
        }
        key.push(1);
        key.extend_from_slice(&payload.to_be_bytes());
    } else if i != packet.len() {
        return None;
    } else {
        key.push(0);
    }
    Some(name_end)
}

impl AnswerCache {
    /// The answer to `packet` from the cache, if it is a simple query answered before at
    /// this `generation` of the index: the cached bytes with the query's id and name (its
    /// case, which a resolver checks) put in.
    pub fn get(&mut self, packet: &[u8], transport: Transport, generation: u64) -> Option<Reply> {
        let name_end = simple_query(packet, transport, &mut self.key)?;
        let (g, bytes) = self.entries.get(&self.key)?;
        if *g != generation || bytes.len() < name_end {
            return None;
        }
        let mut out = bytes.clone();
        out[..2].copy_from_slice(&packet[..2]);
        out[12..name_end].copy_from_slice(&packet[12..name_end]);
        let qtype = u16::from_be_bytes([packet[name_end], packet[name_end + 1]]);
        let rcode = ResponseCode::from(0, out[3] & 0x0f);
        Some(Reply {
            bytes: out,
            qtype: Some(RecordType::from(qtype)),
            rcode,
        })
    }

    /// Keep `reply` to `packet` (a simple query) for later ones.
    pub fn put(&mut self, packet: &[u8], transport: Transport, generation: u64, reply: &[u8]) {
        let Some(name_end) = simple_query(packet, transport, &mut self.key) else {
            return;
        };
        // Only answers that echo the question where the query had it.
        if reply.len() < name_end
            || !reply[12..name_end].eq_ignore_ascii_case(&packet[12..name_end])
        {
            return;
        }
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries
            .insert(self.key.clone(), (generation, reply.to_vec()));
    }
}

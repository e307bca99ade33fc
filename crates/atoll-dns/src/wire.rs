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

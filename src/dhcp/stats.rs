//! DHCP packet counters: what came in, what went out, what was dropped and why. Shown by
//! the API's stats view, `/metrics`, and a periodic log line. Which counter an event goes to
//! is chosen here, so the engine and the codec stay free of counting.

use super::engine::DropReason;
use super::packet::ParseError;
use super::persist_gate::Busy;
use crate::counters::Counter;
use dhcproto::v4::MessageType;

crate::counter_set! {
    /// Every DHCP counter; the field names are the exported names.
    pub struct DhcpStats {
        received_discover,
        received_request,
        received_decline,
        received_release,
        received_inform,
        received_other,
        sent_offer,
        sent_ack,
        sent_nak,
        send_errors,
        persist_failures,
        // Malformed packets, by what was wrong (dropped before any state is touched).
        malformed_truncated,
        malformed_bad_cookie,
        malformed_bad_hlen,
        malformed_not_request,
        malformed_bad_options,
        malformed_no_message_type,
        // Well-formed requests that get no answer, by reason (engine::DropReason).
        dropped_no_subnet,
        dropped_untrusted_relay,
        dropped_unknown_client,
        dropped_pool_exhausted,
        dropped_other_server,
        dropped_no_record,
        dropped_not_clients_lease,
        dropped_malformed_request,
        dropped_unsupported_type,
        dropped_failover_no_service,
        dropped_failover_partners_client,
        // Lease writes not admitted (`persist_gate`): the address has one in flight, or the cap.
        dropped_persist_in_flight,
        dropped_persist_backlog,
    }
}

impl DhcpStats {
    /// Where a packet that does not parse is counted.
    pub fn malformed(&self, e: ParseError) -> &Counter {
        match e {
            ParseError::Truncated => &self.malformed_truncated,
            ParseError::BadCookie => &self.malformed_bad_cookie,
            ParseError::BadHlen => &self.malformed_bad_hlen,
            ParseError::NotRequest => &self.malformed_not_request,
            ParseError::BadOptions => &self.malformed_bad_options,
            ParseError::NoMessageType => &self.malformed_no_message_type,
        }
    }

    pub fn received(&self, t: MessageType) -> &Counter {
        match t {
            MessageType::Discover => &self.received_discover,
            MessageType::Request => &self.received_request,
            MessageType::Decline => &self.received_decline,
            MessageType::Release => &self.received_release,
            MessageType::Inform => &self.received_inform,
            _ => &self.received_other,
        }
    }

    pub fn sent(&self, t: MessageType) -> &Counter {
        match t {
            MessageType::Offer => &self.sent_offer,
            MessageType::Nak => &self.sent_nak,
            _ => &self.sent_ack,
        }
    }

    /// Where a request the engine answers with nothing is counted.
    pub fn dropped(&self, reason: DropReason) -> &Counter {
        match reason {
            DropReason::NoSubnet => &self.dropped_no_subnet,
            DropReason::UntrustedRelay => &self.dropped_untrusted_relay,
            DropReason::UnknownClient => &self.dropped_unknown_client,
            DropReason::PoolExhausted => &self.dropped_pool_exhausted,
            DropReason::OtherServer => &self.dropped_other_server,
            DropReason::NoRecord => &self.dropped_no_record,
            DropReason::NotClientsLease => &self.dropped_not_clients_lease,
            DropReason::Malformed => &self.dropped_malformed_request,
            DropReason::Unsupported => &self.dropped_unsupported_type,
            DropReason::FailoverNoService => &self.dropped_failover_no_service,
            DropReason::FailoverPartnersClient => &self.dropped_failover_partners_client,
        }
    }

    /// Where a lease write the persist gate did not admit is counted.
    pub fn not_persisted(&self, busy: Busy) -> &Counter {
        match busy {
            Busy::AddressInFlight => &self.dropped_persist_in_flight,
            Busy::Full => &self.dropped_persist_backlog,
        }
    }
}

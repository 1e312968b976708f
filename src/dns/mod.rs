//! The site's names in DNS (issue 35): provd keeps each named host's A and PTR records
//! current on the site's own DNS server with RFC 2136 dynamic updates signed with TSIG.
//!
//! - `key`: the TSIG key, from the file `tsig-keygen` writes;
//! - `records` (pure): the names the site should have, and the changes from what was last
//!   published;
//! - `update` (pure): the signed update messages for one change, and the reading of answers;
//! - `updater`: the one task that owns the queue: it recomputes the wanted names when
//!   something changes (and now and then), sends what differs, records what the server
//!   accepted in the store, and retries what failed. It is never in the path of a DHCP
//!   answer or an install: a dead DNS server only grows the queue, which status and
//!   `/metrics` show.

pub mod key;
pub mod records;
pub mod update;
pub mod updater;

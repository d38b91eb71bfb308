//! The test lab of server-trust: real servers on loopback addresses, driven the way an admin
//! drives them, shared by the integration tests, the demo and the benchmarks.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use server_trust_lab::{CAPULET, Lab, MONTAGUE, TrustAdmin, presence_from};
//!
//! let lab = Lab::server_trust(); // two Prosody servers with mod_server_trust
//! lab.montague.cli(&["request", CAPULET]);
//! lab.capulet.wait_for("subscribe", Duration::from_secs(10), presence_from(MONTAGUE, "subscribe"));
//! ```
//!
//! * [`slots`]: a pair of loopback addresses per lab, unique across threads and processes.
//! * [`process`]: child processes that never outlive the test (TERM then KILL, a watchdog for a
//!   test process that dies without unwinding, commands with a timeout).
//! * [`artifacts`]: the Lua module, the CLI and the helper binaries for the profile in use.
//! * [`admin`]: the `server-trust` CLI on a server's store ([`TrustAdmin`]).
//! * [`prosody`]: two Prosody servers (0.12 or 13) federating over s2s, recording what they see.
//! * [`stanza`]: one recorded stanza and predicates on it.
//! * [`lua`]: Lua literals for configs and admin-shell lines.
//! * [`certs`]: self-signed certificates; [`stats`]: percentiles for the benchmarks.
//! * [`c2s`]: a minimal XMPP client (SASL PLAIN, XEP-0199 pings); [`flood`]: a request flood
//!   from many domains over real s2s (`benches/flood.rs`).
//! * [`xmpp_client`]: a real XMPP client library (slixmpp) over c2s for the XEP-0050 ad-hoc
//!   commands, as an admin's client drives them.

pub mod admin;
pub mod artifacts;
pub mod c2s;
pub mod certs;
pub mod ejabberd;
pub mod flood;
pub mod lua;
pub mod process;
pub mod prosody;
pub mod slots;
pub mod stanza;
pub mod stats;
pub mod xmpp_client;

pub use admin::TrustAdmin;
pub use prosody::{CAPULET, Lab, LabOptions, MONTAGUE, Server, VERONA, prosody13, user_ids};
pub use stanza::{Stanza, presence_from};

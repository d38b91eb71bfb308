//! RFC 6121 §3 subscription states and the Appendix A transition tables, for server JIDs.
//!
//! [`transition`] is a pure, total function: every (state, direction, type) cell of
//! tables A.2.1–A.2.4 (outbound) and A.3.1–A.3.4 (inbound) maps to a next state and a
//! disposition. The engine adds the XEP-0267 policy (admin prompts, pre-approval) on top.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vocab;

/// The nine subscription states of RFC 6121 Appendix A.1, numbered as in the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    /// No subscription either way.
    None = 0,
    /// We asked the peer; no answer yet.
    #[serde(rename = "none+pending-out")]
    NonePendingOut = 1,
    /// The peer asked us; the admin has not decided.
    #[serde(rename = "none+pending-in")]
    NonePendingIn = 2,
    /// Both asked, neither answered.
    #[serde(rename = "none+pending-out-in")]
    NonePendingOutIn = 3,
    /// We are subscribed to the peer (the peer trusts us).
    To = 4,
    /// We are subscribed to the peer, and the peer asked us.
    #[serde(rename = "to+pending-in")]
    ToPendingIn = 5,
    /// The peer is subscribed to us (we trust the peer).
    From = 6,
    /// We trust the peer and asked it back.
    #[serde(rename = "from+pending-out")]
    FromPendingOut = 7,
    /// Mutual trust.
    Both = 8,
}

/// Which way a subscription stanza travels, from the point of view of our server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the peer.
    Inbound = 0,
    /// Sent by us to the peer.
    Outbound = 1,
}

/// The four subscription-related presence types (the first four [`crate::PresenceKind`]s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionType {
    /// `subscribe`: a request.
    Subscribe = 0,
    /// `subscribed`: an approval.
    Subscribed = 1,
    /// `unsubscribe`: the subscriber withdraws.
    Unsubscribe = 2,
    /// `unsubscribed`: a denial or cancellation by the contact.
    Unsubscribed = 3,
}

/// What to do with the stanza that caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Inbound: hand it to the admin queue / record it. Outbound: route it.
    Deliver = 0,
    /// Inbound `subscribe` that is already approved: answer `subscribed` without asking.
    AutoReply = 1,
    /// Do not deliver (inbound) or do not route (outbound).
    Drop = 2,
}

impl Subscription {
    /// Every state, in C ABI order.
    pub const ALL: [Subscription; 9] = [
        Subscription::None,
        Subscription::NonePendingOut,
        Subscription::NonePendingIn,
        Subscription::NonePendingOutIn,
        Subscription::To,
        Subscription::ToPendingIn,
        Subscription::From,
        Subscription::FromPendingOut,
        Subscription::Both,
    ];

    /// The state numbered `n` in the C ABI.
    pub fn from_index(n: u32) -> Option<Subscription> {
        Self::ALL.get(n as usize).copied()
    }

    /// Builds a state from its three RFC 6121 components.
    pub fn from_parts(to: bool, from: bool, pending_out: bool, pending_in: bool) -> Subscription {
        use Subscription::*;
        match (to, from) {
            (true, true) => Both,
            (true, false) if pending_in => ToPendingIn,
            (true, false) => To,
            (false, true) if pending_out => FromPendingOut,
            (false, true) => From,
            (false, false) => match (pending_out, pending_in) {
                (true, true) => NonePendingOutIn,
                (true, false) => NonePendingOut,
                (false, true) => NonePendingIn,
                (false, false) => None,
            },
        }
    }

    /// We are subscribed to the peer's presence: the peer approved us.
    pub fn to(self) -> bool {
        matches!(self, Self::To | Self::ToPendingIn | Self::Both)
    }
    /// The peer is subscribed to us: we approved the peer. This is what "trusted" means.
    pub fn from(self) -> bool {
        matches!(self, Self::From | Self::FromPendingOut | Self::Both)
    }
    /// We sent a request that is unanswered.
    pub fn pending_out(self) -> bool {
        matches!(self, Self::NonePendingOut | Self::NonePendingOutIn | Self::FromPendingOut)
    }
    /// The peer sent a request that the admin has not decided.
    pub fn pending_in(self) -> bool {
        matches!(self, Self::NonePendingIn | Self::NonePendingOutIn | Self::ToPendingIn)
    }

    /// Stable lowercase name used in files, JSON and the CLI (the serde name).
    pub fn as_str(self) -> &'static str {
        vocab::name(&self)
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SubscriptionType {
    /// Every type, in C ABI order.
    pub const ALL: [SubscriptionType; 4] = [
        SubscriptionType::Subscribe,
        SubscriptionType::Subscribed,
        SubscriptionType::Unsubscribe,
        SubscriptionType::Unsubscribed,
    ];

    /// The type numbered `n` in the C ABI.
    pub fn from_index(n: u32) -> Option<SubscriptionType> {
        Self::ALL.get(n as usize).copied()
    }

    /// The presence `type` attribute value.
    pub fn as_str(self) -> &'static str {
        vocab::name(&self)
    }
}

impl FromStr for SubscriptionType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        vocab::parse("subscription type", s)
    }
}

impl Direction {
    /// The direction numbered `n` in the C ABI.
    pub fn from_index(n: u32) -> Option<Direction> {
        match n {
            0 => Some(Direction::Inbound),
            1 => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// RFC 6121 Appendix A: the next state and what happens to the stanza.
///
/// Outbound `subscribed`/`unsubscribed` with no pending inbound request change nothing and
/// are not routed (§3.1.5, §3.2: there is nothing to answer; pre-approval is engine policy).
pub fn transition(state: Subscription, dir: Direction, ty: SubscriptionType) -> (Subscription, Disposition) {
    use Direction::*;
    use Disposition::*;
    use SubscriptionType::*;
    let (to, from, out, inn) = (state.to(), state.from(), state.pending_out(), state.pending_in());
    let s = Subscription::from_parts;
    match (dir, ty) {
        // A.2.1: a request sets Pending Out unless we are already subscribed.
        (Outbound, Subscribe) if to => (state, Deliver),
        (Outbound, Subscribe) => (s(false, from, true, inn), Deliver),
        // A.2.2: withdraw our subscription or our pending request.
        (Outbound, Unsubscribe) => (s(false, from, false, inn), Deliver),
        // A.2.3: approving only means something when the peer asked.
        (Outbound, Subscribed) if inn => (s(to, true, out, false), Deliver),
        (Outbound, Subscribed) => (state, Drop),
        // A.2.4: deny a pending request or cancel the peer's subscription.
        (Outbound, Unsubscribed) if inn || from => (s(to, false, out, false), Deliver),
        (Outbound, Unsubscribed) => (state, Drop),
        // A.3.1: a new request goes to the admin; one already approved is answered.
        (Inbound, Subscribe) if from => (state, AutoReply),
        (Inbound, Subscribe) if inn => (state, Drop),
        (Inbound, Subscribe) => (s(to, false, out, true), Deliver),
        // A.3.2: the peer withdraws its subscription or its pending request.
        (Inbound, Unsubscribe) if from || inn => (s(to, false, out, false), Deliver),
        (Inbound, Unsubscribe) => (state, Drop),
        // A.3.3: an approval counts only if we asked.
        (Inbound, Subscribed) if out => (s(true, from, false, inn), Deliver),
        (Inbound, Subscribed) => (state, Drop),
        // A.3.4: the peer denies our request or cancels our subscription.
        (Inbound, Unsubscribed) if out || to => (s(false, from, false, inn), Deliver),
        (Inbound, Unsubscribed) => (state, Drop),
    }
}

#[cfg(test)]
mod tests {
    use super::Direction::*;
    use super::Disposition::*;
    use super::Subscription::*;
    use super::SubscriptionType::*;
    use super::*;

    type Row = (Direction, SubscriptionType, [(Subscription, Disposition); 9]);

    /// The RFC 6121 Appendix A tables, written out cell by cell (not derived) so that the
    /// compact implementation above is checked against the text of the RFC.
    #[rustfmt::skip]
    const TABLE: [Row; 8] = [
        // A.2.1 outbound subscribe
        (Outbound, Subscribe, [(NonePendingOut, Deliver), (NonePendingOut, Deliver), (NonePendingOutIn, Deliver),
            (NonePendingOutIn, Deliver), (To, Deliver), (ToPendingIn, Deliver), (FromPendingOut, Deliver),
            (FromPendingOut, Deliver), (Both, Deliver)]),
        // A.2.2 outbound unsubscribe
        (Outbound, Unsubscribe, [(None, Deliver), (None, Deliver), (NonePendingIn, Deliver),
            (NonePendingIn, Deliver), (None, Deliver), (NonePendingIn, Deliver), (From, Deliver),
            (From, Deliver), (From, Deliver)]),
        // A.2.3 outbound subscribed
        (Outbound, Subscribed, [(None, Drop), (NonePendingOut, Drop), (From, Deliver),
            (FromPendingOut, Deliver), (To, Drop), (Both, Deliver), (From, Drop),
            (FromPendingOut, Drop), (Both, Drop)]),
        // A.2.4 outbound unsubscribed
        (Outbound, Unsubscribed, [(None, Drop), (NonePendingOut, Drop), (None, Deliver),
            (NonePendingOut, Deliver), (To, Drop), (To, Deliver), (None, Deliver),
            (NonePendingOut, Deliver), (To, Deliver)]),
        // A.3.1 inbound subscribe
        (Inbound, Subscribe, [(NonePendingIn, Deliver), (NonePendingOutIn, Deliver), (NonePendingIn, Drop),
            (NonePendingOutIn, Drop), (ToPendingIn, Deliver), (ToPendingIn, Drop), (From, AutoReply),
            (FromPendingOut, AutoReply), (Both, AutoReply)]),
        // A.3.2 inbound unsubscribe
        (Inbound, Unsubscribe, [(None, Drop), (NonePendingOut, Drop), (None, Deliver),
            (NonePendingOut, Deliver), (To, Drop), (To, Deliver), (None, Deliver),
            (NonePendingOut, Deliver), (To, Deliver)]),
        // A.3.3 inbound subscribed
        (Inbound, Subscribed, [(None, Drop), (To, Deliver), (NonePendingIn, Drop),
            (ToPendingIn, Deliver), (To, Drop), (ToPendingIn, Drop), (From, Drop),
            (Both, Deliver), (Both, Drop)]),
        // A.3.4 inbound unsubscribed
        (Inbound, Unsubscribed, [(None, Drop), (None, Deliver), (NonePendingIn, Drop),
            (NonePendingIn, Deliver), (None, Deliver), (NonePendingIn, Deliver), (From, Drop),
            (From, Deliver), (From, Deliver)]),
    ];

    #[test]
    fn every_cell_matches_rfc6121_appendix_a() {
        for (dir, ty, row) in TABLE {
            for (state, expected) in Subscription::ALL.into_iter().zip(row) {
                assert_eq!(transition(state, dir, ty), expected, "{state} {dir:?} {ty:?}");
            }
        }
    }

    #[test]
    fn file_names_match_display_names() {
        for s in Subscription::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }

    #[test]
    fn parts_round_trip() {
        for s in Subscription::ALL {
            let back = Subscription::from_parts(s.to(), s.from(), s.pending_out(), s.pending_in());
            assert_eq!(back, s);
            assert_eq!(Subscription::from_index(s as u32), Some(s));
        }
        assert_eq!(Subscription::from_index(9), Option::None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn any_state() -> impl Strategy<Value = Subscription> {
            (0u32..9).prop_map(|n| Subscription::from_index(n).unwrap())
        }
        fn any_type() -> impl Strategy<Value = SubscriptionType> {
            (0u32..4).prop_map(|n| SubscriptionType::from_index(n).unwrap())
        }
        fn any_dir() -> impl Strategy<Value = Direction> {
            (0u32..2).prop_map(|n| Direction::from_index(n).unwrap())
        }

        /// One server's side of a pair: sends `ty`, the peer receives it if it is routed,
        /// and an auto-reply comes back at once.
        fn send(me: &mut Subscription, peer: &mut Subscription, ty: SubscriptionType) {
            let (next, disp) = transition(*me, Direction::Outbound, ty);
            *me = next;
            if disp == Disposition::Drop {
                return;
            }
            let (pnext, pdisp) = transition(*peer, Direction::Inbound, ty);
            *peer = pnext;
            if pdisp == Disposition::AutoReply {
                *me = transition(*me, Direction::Inbound, SubscriptionType::Subscribed).0;
            }
        }

        proptest! {
            /// XEP-0267: trust (From) is only ever granted by our own `subscribed`, i.e. an
            /// admin act; no inbound stanza can make us trust a peer.
            #[test]
            fn only_an_outbound_subscribed_grants_trust(s in any_state(), d in any_dir(), t in any_type()) {
                let (next, disp) = transition(s, d, t);
                if next.from() && !s.from() {
                    prop_assert_eq!((d, t), (Direction::Outbound, SubscriptionType::Subscribed));
                    prop_assert!(s.pending_in(), "approval without a request");
                }
                if next.to() && !s.to() {
                    prop_assert_eq!((d, t), (Direction::Inbound, SubscriptionType::Subscribed));
                    prop_assert!(s.pending_out(), "subscribed we never asked for");
                }
                if disp == Disposition::Drop {
                    prop_assert_eq!(next, s, "a dropped stanza changes nothing");
                }
                if disp == Disposition::AutoReply {
                    prop_assert!(s.from() && d == Direction::Inbound && t == SubscriptionType::Subscribe);
                }
                // Applying the same stanza twice changes nothing more (retransmissions are safe).
                prop_assert_eq!(transition(next, d, t).0, next);
            }

            /// Two servers exchanging any sequence of subscription stanzas (delivered in
            /// order) always agree: my To is your From, my Pending Out is your Pending In.
            #[test]
            fn two_servers_stay_consistent(ops in proptest::collection::vec((any::<bool>(), any_type()), 0..40)) {
                let (mut a, mut b) = (Subscription::None, Subscription::None);
                for (a_sends, ty) in ops {
                    if a_sends { send(&mut a, &mut b, ty) } else { send(&mut b, &mut a, ty) }
                    prop_assert_eq!(a.to(), b.from(), "{} vs {}", a, b);
                    prop_assert_eq!(a.from(), b.to(), "{} vs {}", a, b);
                    prop_assert_eq!(a.pending_out(), b.pending_in(), "{} vs {}", a, b);
                    prop_assert_eq!(a.pending_in(), b.pending_out(), "{} vs {}", a, b);
                }
            }
        }
    }
}

//! The failover state machine (pure): draft-ietf-dhc-failover-12 section 9 with the choices
//! ISC dhcpd 4.4 makes where the draft leaves room. Input: this server's state, what it
//! knows, and one event; output: the next state and what to send.
//!
//! State numbers are the protocol's (section 12.24), including ISC's 254 for RECOVER-WAIT,
//! which the draft describes but does not number.
//!
//! What each state means for DHCP service is `service()`: only NORMAL load-balances; the
//! states where the partner is known or presumed down serve every client (and in
//! PARTNER-DOWN may take over the partner's free addresses once MCLT has passed); the
//! states where this server's data may be stale or in conflict serve nobody.

use super::loadbalance::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum State {
    Startup = 1,
    Normal = 2,
    CommunicationsInterrupted = 3,
    PartnerDown = 4,
    PotentialConflict = 5,
    Recover = 6,
    Paused = 7,
    Shutdown = 8,
    RecoverDone = 9,
    ResolutionInterrupted = 10,
    ConflictDone = 11,
    RecoverWait = 254,
}

impl State {
    pub const ALL: [State; 12] = [
        State::Startup,
        State::Normal,
        State::CommunicationsInterrupted,
        State::PartnerDown,
        State::PotentialConflict,
        State::Recover,
        State::Paused,
        State::Shutdown,
        State::RecoverDone,
        State::ResolutionInterrupted,
        State::ConflictDone,
        State::RecoverWait,
    ];

    pub fn from_u8(v: u8) -> Option<State> {
        State::ALL.iter().copied().find(|s| *s as u8 == v)
    }

    /// The name ISC prints (and omshell shows).
    pub fn name(self) -> &'static str {
        match self {
            State::Startup => "startup",
            State::Normal => "normal",
            State::CommunicationsInterrupted => "communications-interrupted",
            State::PartnerDown => "partner-down",
            State::PotentialConflict => "potential-conflict",
            State::Recover => "recover",
            State::Paused => "paused",
            State::Shutdown => "shutdown",
            State::RecoverDone => "recover-done",
            State::ResolutionInterrupted => "resolution-interrupted",
            State::ConflictDone => "conflict-done",
            State::RecoverWait => "recover-wait",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The connection is up and the partner says (CONNECTACK, STATE) it is in this state.
    PeerState(State),
    /// The connection dropped, or nothing came within max-response-delay.
    CommunicationsLost,
    /// The operator says the partner is down (`provd failover partner-down`).
    OperatorPartnerDown,
    /// UPDDONE arrived for this server's UPDREQ/UPDREQALL.
    UpdateDone,
    /// MCLT has passed since this server entered RECOVER (stos + MCLT).
    McltElapsed,
    /// Orderly stop.
    Shutdown,
    /// STARTUP lasted max-response-delay without a word from the partner.
    NoPartner,
}

/// What the server must send after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Announce the new state (STATE message).
    SendState,
    /// Ask for every binding the partner has (RECOVER, POTENTIAL-CONFLICT).
    SendUpdReqAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("partner-down is refused in {0}: the partner is talking to us (it is not down)")]
    PartnerIsUp(&'static str),
    #[error("partner-down is refused in {0}: this server is shutting down")]
    NotRecovered(&'static str),
}

/// What this server knows besides its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub role: Role,
    /// The state saved before the last stop (STARTUP resolves to it).
    pub saved: State,
    /// The partner's last known state, if any.
    pub peer: Option<State>,
    /// Has MCLT passed since this server's start time of state (for RECOVER)?
    pub mclt_elapsed: bool,
}

fn to(state: State, actions: &[Action]) -> Outcome {
    Outcome {
        state,
        actions: actions.to_vec(),
    }
}

fn stay(state: State) -> Outcome {
    Outcome {
        state,
        actions: Vec::new(),
    }
}

/// Entering a state: announce it; RECOVER asks for everything; in POTENTIAL-CONFLICT the
/// primary asks first, the secondary only once the primary is CONFLICT-DONE.
fn entered(ctx: &Context, state: State) -> Outcome {
    match state {
        State::Recover => to(state, &[Action::SendState, Action::SendUpdReqAll]),
        State::PotentialConflict if ctx.role == Role::Primary => to(state, &[Action::SendState, Action::SendUpdReqAll]),
        _ => to(state, &[Action::SendState]),
    }
}

/// The state a server restarting in `saved` resumes when its partner stays silent: serving
/// states lose their partner (COMMUNICATIONS-INTERRUPTED), an unfinished resolution is
/// interrupted, a server with nothing to vouch for recovers.
fn resumed_without_partner(saved: State) -> State {
    use State::*;
    match saved {
        Startup | Shutdown | Paused | RecoverWait => Recover,
        Normal | RecoverDone => CommunicationsInterrupted,
        PotentialConflict | ConflictDone => ResolutionInterrupted,
        s => s,
    }
}

/// Where a server in `me` goes when the partner is (or says it is) in `peer`.
fn on_peer_state(me: State, peer: State, ctx: &Context) -> Outcome {
    use State::*;
    let go = |s: State| if s == me { stay(me) } else { entered(ctx, s) };
    match me {
        // A restart: take the saved state back, then react to the partner from there.
        // A server that never ran (saved = Startup) has no bindings it can vouch for: RECOVER.
        Startup => {
            let from = match ctx.saved {
                Startup | Shutdown | Paused => Recover,
                RecoverWait => Recover,
                // A resolution cut short by the restart starts over.
                PotentialConflict | ConflictDone | ResolutionInterrupted => ResolutionInterrupted,
                s => s,
            };
            entered(ctx, on_peer_state(from, peer, ctx).state)
        }
        Normal | CommunicationsInterrupted | Paused => match peer {
            Normal | CommunicationsInterrupted | RecoverDone | Startup | Paused => go(Normal),
            // The partner served everyone; it may have given out our addresses.
            PartnerDown => go(Recover),
            // The partner lost its data: we hold everything, it catches up from us.
            Recover | RecoverWait => go(PartnerDown),
            // It promised to stop serving: taking over at once is safe.
            Shutdown => go(PartnerDown),
            PotentialConflict | ResolutionInterrupted | ConflictDone => go(PotentialConflict),
        },
        PartnerDown => match peer {
            Recover | RecoverWait => stay(me),
            RecoverDone => go(Normal),
            Normal
            | CommunicationsInterrupted
            | PartnerDown
            | PotentialConflict
            | ResolutionInterrupted
            | ConflictDone => go(PotentialConflict),
            Startup | Paused | Shutdown => stay(me),
        },
        Recover | RecoverWait => match peer {
            // Both recovering: a new pair; nothing to wait for.
            Recover | RecoverWait | RecoverDone if me == RecoverWait => go(RecoverDone),
            _ => stay(me),
        },
        RecoverDone => match peer {
            Normal | RecoverDone => go(Normal),
            _ => stay(me),
        },
        // Resolution goes on through UPDREQALL/UPDDONE, not through state changes.
        // The secondary asks for the primary's bindings once the primary has ours.
        PotentialConflict if peer == ConflictDone && ctx.role == Role::Secondary => {
            to(PotentialConflict, &[Action::SendUpdReqAll])
        }
        PotentialConflict => stay(me),
        // Back in touch: resolve again from the start.
        ResolutionInterrupted => entered(ctx, PotentialConflict),
        ConflictDone => match peer {
            Normal => go(Normal),
            // The partner served alone meanwhile: resolve again.
            PartnerDown => go(PotentialConflict),
            _ => stay(me),
        },
        Shutdown => stay(me),
    }
}

/// The next state. `Err` only for an operator request that would be unsafe.
pub fn next(me: State, ctx: &Context, event: Event) -> Result<Outcome, Refused> {
    use State::*;
    Ok(match event {
        Event::PeerState(peer) => on_peer_state(me, peer, ctx),
        Event::CommunicationsLost => match me {
            Normal | RecoverDone | Paused => entered(ctx, CommunicationsInterrupted),
            PotentialConflict | ConflictDone => entered(ctx, ResolutionInterrupted),
            _ => stay(me),
        },
        Event::OperatorPartnerDown => match me {
            CommunicationsInterrupted | ResolutionInterrupted | Startup | Paused => entered(ctx, PartnerDown),
            PartnerDown => stay(me),
            // Talking to the partner right now: it is not down.
            Normal | PotentialConflict | ConflictDone | RecoverDone => return Err(Refused::PartnerIsUp(me.name())),
            // A server that never heard from its partner (a new pair, the other half not
            // built yet) can only start serving this way; the operator vouches for it.
            Recover | RecoverWait => entered(ctx, PartnerDown),
            Shutdown => return Err(Refused::NotRecovered(me.name())),
        },
        Event::UpdateDone => match me {
            Recover => {
                let peer_recovering = matches!(ctx.peer, Some(Recover | RecoverWait | RecoverDone));
                if ctx.mclt_elapsed || peer_recovering {
                    entered(ctx, RecoverDone)
                } else {
                    entered(ctx, RecoverWait)
                }
            }
            PotentialConflict => match ctx.role {
                Role::Primary => entered(ctx, ConflictDone),
                Role::Secondary if ctx.peer == Some(ConflictDone) => entered(ctx, Normal),
                Role::Secondary => stay(me),
            },
            _ => stay(me),
        },
        Event::McltElapsed => match me {
            RecoverWait => entered(ctx, RecoverDone),
            _ => stay(me),
        },
        Event::Shutdown => entered(ctx, Shutdown),
        // Resume the state saved before the stop, as if the partner had then stopped talking.
        Event::NoPartner => match me {
            Startup => entered(ctx, resumed_without_partner(ctx.saved)),
            _ => stay(me),
        },
    })
}

/// Which clients a server in `state` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Nobody (its bindings may be stale or in conflict).
    None,
    /// Its load-balancing share; new addresses from its own pool.
    LoadBalanced,
    /// Everybody; new addresses only from its own pool (the partner may be alive).
    All,
    /// Everybody; the partner's free addresses too once MCLT has passed since entering.
    AllWithTakeover,
}

pub fn service(state: State, role: Role) -> Service {
    match state {
        State::Normal => Service::LoadBalanced,
        State::ConflictDone if role == Role::Primary => Service::LoadBalanced,
        State::CommunicationsInterrupted | State::Paused => Service::All,
        State::PartnerDown => Service::AllWithTakeover,
        _ => Service::None,
    }
}

#[cfg(test)]
mod tests;

//! Tests of `failover::state`.

use super::*;
use State::*;

fn ctx(role: Role) -> Context {
    Context {
        role,
        saved: Normal,
        peer: None,
        mclt_elapsed: false,
    }
}

fn peer(me: State, p: State) -> State {
    next(me, &ctx(Role::Primary), Event::PeerState(p)).unwrap().state
}

#[test]
fn numbers_and_names_are_the_protocols() {
    assert_eq!(Normal as u8, 2);
    assert_eq!(RecoverWait as u8, 254);
    for s in State::ALL {
        assert_eq!(State::from_u8(s as u8), Some(s));
    }
    assert_eq!(State::from_u8(12), None);
    assert_eq!(CommunicationsInterrupted.name(), "communications-interrupted");
}

#[test]
fn normal_operation_and_losing_the_partner() {
    assert_eq!(peer(Normal, Normal), Normal);
    let o = next(Normal, &ctx(Role::Primary), Event::CommunicationsLost).unwrap();
    assert_eq!(o, to(CommunicationsInterrupted, &[Action::SendState]));
    assert_eq!(peer(CommunicationsInterrupted, Normal), Normal);
    assert_eq!(peer(CommunicationsInterrupted, CommunicationsInterrupted), Normal);
    assert_eq!(peer(CommunicationsInterrupted, Shutdown), PartnerDown);
    assert_eq!(peer(Normal, Recover), PartnerDown);
    assert_eq!(peer(CommunicationsInterrupted, RecoverWait), PartnerDown);
    assert_eq!(peer(Normal, PartnerDown), Recover);
    assert_eq!(peer(Normal, PotentialConflict), PotentialConflict);
    assert_eq!(peer(Paused, Normal), Normal);
}

#[test]
fn partner_down_is_an_operator_decision_and_refused_when_unsafe() {
    let c = ctx(Role::Secondary);
    assert_eq!(
        next(CommunicationsInterrupted, &c, Event::OperatorPartnerDown)
            .unwrap()
            .state,
        PartnerDown
    );
    assert_eq!(
        next(ResolutionInterrupted, &c, Event::OperatorPartnerDown)
            .unwrap()
            .state,
        PartnerDown
    );
    assert!(matches!(
        next(Normal, &c, Event::OperatorPartnerDown),
        Err(Refused::PartnerIsUp(_))
    ));
    assert_eq!(
        next(Recover, &c, Event::OperatorPartnerDown).unwrap().state,
        PartnerDown
    );
    assert!(matches!(
        next(Shutdown, &c, Event::OperatorPartnerDown),
        Err(Refused::NotRecovered(_))
    ));
    assert_eq!(next(PartnerDown, &c, Event::OperatorPartnerDown).unwrap().actions, []);
    // While partner-down: a recovering partner is fed; a finished one brings both to normal.
    assert_eq!(peer(PartnerDown, Recover), PartnerDown);
    assert_eq!(peer(PartnerDown, RecoverWait), PartnerDown);
    assert_eq!(peer(PartnerDown, RecoverDone), Normal);
    // A partner that also served alone: both may have allocated the same addresses.
    assert_eq!(peer(PartnerDown, PartnerDown), PotentialConflict);
    assert_eq!(peer(PartnerDown, Normal), PotentialConflict);
    assert_eq!(peer(PartnerDown, CommunicationsInterrupted), PotentialConflict);
    assert_eq!(
        next(PartnerDown, &c, Event::CommunicationsLost).unwrap().state,
        PartnerDown
    );
}

#[test]
fn recover_asks_for_everything_then_waits_mclt_unless_both_are_new() {
    let mut c = ctx(Role::Secondary);
    let o = next(Normal, &c, Event::PeerState(PartnerDown)).unwrap();
    assert_eq!(o.actions, [Action::SendState, Action::SendUpdReqAll]);
    c.peer = Some(PartnerDown);
    assert_eq!(next(Recover, &c, Event::UpdateDone).unwrap().state, RecoverWait);
    assert_eq!(next(RecoverWait, &c, Event::McltElapsed).unwrap().state, RecoverDone);
    c.mclt_elapsed = true;
    assert_eq!(next(Recover, &c, Event::UpdateDone).unwrap().state, RecoverDone);
    c.mclt_elapsed = false;
    c.peer = Some(Recover);
    assert_eq!(
        next(Recover, &c, Event::UpdateDone).unwrap().state,
        RecoverDone,
        "a new pair"
    );
    assert_eq!(peer(RecoverWait, RecoverDone), RecoverDone);
    assert_eq!(peer(Recover, Normal), Recover, "no shortcut before UPDDONE");
    assert_eq!(peer(RecoverDone, Normal), Normal);
    assert_eq!(peer(RecoverDone, RecoverDone), Normal);
    assert_eq!(peer(RecoverDone, PartnerDown), RecoverDone);
    assert_eq!(
        next(RecoverDone, &c, Event::CommunicationsLost).unwrap().state,
        CommunicationsInterrupted
    );
    assert_eq!(next(Recover, &c, Event::CommunicationsLost).unwrap().state, Recover);
    assert_eq!(next(Recover, &c, Event::McltElapsed).unwrap().state, Recover);
}

#[test]
fn conflict_resolution_primary_first_then_secondary() {
    let p = ctx(Role::Primary);
    let mut s = ctx(Role::Secondary);
    assert_eq!(
        next(PotentialConflict, &p, Event::UpdateDone).unwrap().state,
        ConflictDone
    );
    assert_eq!(
        next(PotentialConflict, &s, Event::UpdateDone).unwrap().state,
        PotentialConflict
    );
    s.peer = Some(ConflictDone);
    assert_eq!(next(PotentialConflict, &s, Event::UpdateDone).unwrap().state, Normal);
    assert_eq!(peer(ConflictDone, Normal), Normal);
    assert_eq!(peer(ConflictDone, PotentialConflict), ConflictDone);
    assert_eq!(
        next(PotentialConflict, &p, Event::CommunicationsLost).unwrap().state,
        ResolutionInterrupted
    );
    assert_eq!(
        next(ConflictDone, &p, Event::CommunicationsLost).unwrap().state,
        ResolutionInterrupted
    );
    assert_eq!(peer(ResolutionInterrupted, PotentialConflict), PotentialConflict);
    assert_eq!(peer(PotentialConflict, Normal), PotentialConflict);
}

#[test]
fn startup_returns_to_the_saved_state_then_reacts() {
    let mut c = ctx(Role::Primary);
    c.saved = Normal;
    assert_eq!(next(Startup, &c, Event::PeerState(Normal)).unwrap().state, Normal);
    assert_eq!(next(Startup, &c, Event::PeerState(PartnerDown)).unwrap().state, Recover);
    c.saved = PartnerDown;
    assert_eq!(next(Startup, &c, Event::PeerState(Recover)).unwrap().state, PartnerDown);
    c.saved = Startup; // never ran: nothing to vouch for
    let o = next(Startup, &c, Event::PeerState(Normal)).unwrap();
    assert_eq!((o.state, o.actions.contains(&Action::SendUpdReqAll)), (Recover, true));
    assert_eq!(next(Startup, &c, Event::CommunicationsLost).unwrap().state, Startup);
    assert_eq!(
        next(Startup, &c, Event::OperatorPartnerDown).unwrap().state,
        PartnerDown
    );
    assert_eq!(next(Normal, &c, Event::Shutdown).unwrap().state, Shutdown);
    // No partner within max-response-delay: resume as if it had stopped talking.
    for (saved, resumed) in [
        (Normal, CommunicationsInterrupted),
        (RecoverDone, CommunicationsInterrupted),
        (PartnerDown, PartnerDown),
        (Startup, Recover),
        (RecoverWait, Recover),
        (ConflictDone, ResolutionInterrupted),
        (CommunicationsInterrupted, CommunicationsInterrupted),
    ] {
        let c = Context { saved, ..c };
        assert_eq!(next(Startup, &c, Event::NoPartner).unwrap().state, resumed, "{saved:?}");
    }
    assert_eq!(
        next(Normal, &c, Event::NoPartner).unwrap().state,
        Normal,
        "only STARTUP resumes"
    );
    assert_eq!(peer(Shutdown, Normal), Shutdown);
}

#[test]
fn service_by_state() {
    assert_eq!(service(Normal, Role::Secondary), Service::LoadBalanced);
    assert_eq!(service(CommunicationsInterrupted, Role::Primary), Service::All);
    assert_eq!(service(PartnerDown, Role::Primary), Service::AllWithTakeover);
    assert_eq!(service(ConflictDone, Role::Primary), Service::LoadBalanced);
    for s in [
        Startup,
        Recover,
        RecoverWait,
        RecoverDone,
        PotentialConflict,
        ResolutionInterrupted,
        Shutdown,
    ] {
        assert_eq!(service(s, Role::Primary), Service::None, "{}", s.name());
    }
}

const EVENTS: [Event; 7] = [
    Event::NoPartner,
    Event::CommunicationsLost,
    Event::OperatorPartnerDown,
    Event::UpdateDone,
    Event::McltElapsed,
    Event::Shutdown,
    Event::PeerState(Normal),
];

#[test]
fn every_state_and_event_is_handled_and_safety_rules_hold() {
    for role in [Role::Primary, Role::Secondary] {
        for me in State::ALL {
            for saved in State::ALL {
                for peer_known in [None, Some(Normal), Some(ConflictDone), Some(Recover)] {
                    for mclt_elapsed in [false, true] {
                        let c = Context {
                            role,
                            saved,
                            peer: peer_known,
                            mclt_elapsed,
                        };
                        let mut events: Vec<Event> = EVENTS.to_vec();
                        events.extend(State::ALL.iter().map(|p| Event::PeerState(*p)));
                        for e in events {
                            let Ok(out) = next(me, &c, e) else { continue };
                            // A partner in PARTNER-DOWN may have handed out our addresses:
                            // never go to a serving state on its word without recovering.
                            if e == Event::PeerState(PartnerDown) && me != PartnerDown {
                                assert_eq!(service(out.state, role), Service::None, "{me:?} -> {:?}", out.state);
                            }
                            // Losing the partner never leads to load balancing.
                            if e == Event::CommunicationsLost {
                                assert_ne!(service(out.state, role), Service::LoadBalanced, "{me:?}");
                            }
                            // Taking over the partner's addresses is never automatic except
                            // on the partner's own word (it shut down or it is recovering).
                            if out.state == PartnerDown && me != PartnerDown {
                                assert!(
                                    matches!(
                                        e,
                                        Event::OperatorPartnerDown | Event::PeerState(Shutdown | Recover | RecoverWait)
                                    ) || (me == Startup && saved == PartnerDown),
                                    "{me:?} -> partner-down on {e:?}"
                                );
                            }
                            // Entering RECOVER always asks for the partner's bindings.
                            if out.state == Recover && me != Recover {
                                assert!(out.actions.contains(&Action::SendUpdReqAll), "{me:?} {e:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Two state machines joined by a simulated link: each STATE one sends is an event for
/// the other; UPDREQALL is answered with UPDDONE at once (the bindings are not modelled).
struct Pair {
    a: State,
    b: State,
    a_saved: State,
    b_saved: State,
    link: bool,
    /// b is running (a always is here).
    b_up: bool,
    mclt_elapsed: bool,
}

impl Pair {
    fn fresh() -> Pair {
        Pair {
            a: Startup,
            b: Startup,
            a_saved: Startup,
            b_saved: Startup,
            link: false,
            b_up: true,
            mclt_elapsed: false,
        }
    }

    fn ctx(&self, primary: bool) -> Context {
        Context {
            role: if primary { Role::Primary } else { Role::Secondary },
            saved: if primary { self.a_saved } else { self.b_saved },
            peer: Some(if primary { self.b } else { self.a }),
            mclt_elapsed: self.mclt_elapsed,
        }
    }

    /// Deliver one event to one side, then propagate STATE/UPDREQALL until quiet.
    fn deliver(&mut self, primary: bool, e: Event) {
        let mut work = vec![(primary, e)];
        let mut steps = 0;
        while let Some((to_a, e)) = work.pop() {
            steps += 1;
            assert!(steps < 100, "no convergence: a {:?} b {:?}", self.a, self.b);
            let me = if to_a { self.a } else { self.b };
            let Ok(out) = next(me, &self.ctx(to_a), e) else {
                continue;
            };
            if to_a {
                self.a = out.state
            } else {
                self.b = out.state
            }
            if !self.link {
                continue;
            }
            for action in out.actions {
                match action {
                    Action::SendState => work.insert(0, (!to_a, Event::PeerState(out.state))),
                    Action::SendUpdReqAll => work.insert(0, (to_a, Event::UpdateDone)),
                }
            }
        }
    }

    fn connect(&mut self) {
        self.link = true;
        let (a, b) = (self.a, self.b);
        self.deliver(true, Event::PeerState(b));
        self.deliver(false, Event::PeerState(a));
        // Settle: announce states until both agree (a real link repeats STATE on change).
        for _ in 0..10 {
            let (a, b) = (self.a, self.b);
            self.deliver(true, Event::PeerState(b));
            self.deliver(false, Event::PeerState(a));
            if (a, b) == (self.a, self.b) {
                break;
            }
        }
    }

    fn cut(&mut self) {
        self.link = false;
        self.deliver(true, Event::CommunicationsLost);
        if self.b_up {
            self.deliver(false, Event::CommunicationsLost);
        }
    }
}

#[test]
fn a_simulated_pair_converges_to_normal_after_each_failure() {
    // A new pair.
    let mut p = Pair::fresh();
    p.connect();
    assert_eq!((p.a, p.b), (Normal, Normal));

    // The link breaks and comes back.
    p.cut();
    assert_eq!((p.a, p.b), (CommunicationsInterrupted, CommunicationsInterrupted));
    p.connect();
    assert_eq!((p.a, p.b), (Normal, Normal));

    // b dies; the operator declares it down on a; b restarts from its saved state.
    p.b_up = false;
    p.cut();
    p.deliver(true, Event::OperatorPartnerDown);
    assert_eq!(p.a, PartnerDown);
    p.b_saved = p.b;
    p.b = Startup;
    p.b_up = true;
    p.connect();
    // b recovered from a (UPDREQALL answered); with MCLT not yet passed it waits.
    assert_eq!((p.a, p.b), (PartnerDown, RecoverWait));
    p.mclt_elapsed = true;
    p.deliver(false, Event::McltElapsed);
    p.connect();
    assert_eq!((p.a, p.b), (Normal, Normal));

    // Split brain: both were declared partner-down while cut off.
    p.cut();
    p.deliver(true, Event::OperatorPartnerDown);
    p.deliver(false, Event::OperatorPartnerDown);
    assert_eq!((p.a, p.b), (PartnerDown, PartnerDown));
    p.connect();
    assert_eq!(
        (p.a, p.b),
        (Normal, Normal),
        "potential-conflict resolved, primary first"
    );
}
